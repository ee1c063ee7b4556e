r"""Action-value critics Q(s, a) for DDPG (one), TD3 and SAC (two, "twin").

:class:`QCritics` holds ``n`` independent MLPs over ``[s, a]`` as ONE stacked network: layer ``k`` keeps its
weights as ``[n, in, out]`` and runs one ``torch.baddbmm`` for all members (a :class:`StackedMLP` body and a
1-wide output layer). The maths is that of ``n`` separate ``nn.Linear`` MLPs (same initialization, independent
parameters); the op count is that of one, which is what a small MLP's update costs on a CPU
(benchmarks/bare_offpolicy.py compares the two).

Images (uint8 ``[H, W, C]`` or ``[C, H, W]``, alone or in a Dict or Tuple) go through one Nature CNN (one per
image part) that the ``n`` critics share (as SB3's
critics share their features extractor); its 512 features and the action enter the stacked MLPs.

Shapes: ``forward(obs [B, *obs_shape], actions [B, d]) -> [n, B]`` (float32): row i is Q_i(s, a).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.actor_critic import StackedMLP
from lightning_pg.networks.encoders import has_images, image_encoder


class QCritics(nn.Module):
    def __init__(self, observation_space: spaces.Space, act_dim: int, hidden_sizes: Sequence[int], n_critics: int,
                 activation: str):
        super().__init__()
        self.encoder = image_encoder(observation_space) if has_images(observation_space) else None
        features = self.encoder.out_features if self.encoder is not None else spaces.flatdim(observation_space)
        self.body = StackedMLP(features + act_dim, hidden_sizes, activation, n_critics)
        bound = 1.0 / math.sqrt(self.body.out_features)  # nn.Linear's default init of the 1-wide output layer
        self.out_weight = nn.Parameter(torch.empty(n_critics, 1, self.body.out_features).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(n_critics, 1).uniform_(-bound, bound))
        self.n_critics = n_critics

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        h = self.body(self._inputs(obs, actions))  # [n, B, hidden]
        # the 1-wide output layer as a product-sum, not a matmul: Q comes out in float32 even when the matmuls
        # run in bf16 (autocast, or matmul_precision="medium")
        return (h * self.out_weight).sum(-1) + self.out_bias

    def member(self, obs: Tensor, actions: Tensor, k: int = 0) -> Tensor:
        """Q_k(s, a) alone, ``[B]``: TD3's and DDPG's actor loss reads Q_1 only, and the stacked forward would
        compute, and differentiate, every critic. A subclass that overrides ``forward``, or forward hooks here
        or on the body, get ``forward(obs, actions)[k]``."""
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (self, self.body))
        if type(self).forward is not QCritics.forward or hooked:
            return self(obs, actions)[k]
        h = self.body.member(self._inputs(obs, actions), k)  # [B, hidden]
        return (h * self.out_weight[k]).sum(-1) + self.out_bias[k]

    def _inputs(self, obs: Tensor, actions: Tensor) -> Tensor:
        features = obs.flatten(1) if self.encoder is None else self.encoder(obs)
        return torch.cat([features.to(actions.dtype), actions], dim=-1)
