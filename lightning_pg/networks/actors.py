"""Actors for the off-policy algorithms, acting in [-1, 1]^d (the module rescales into the env's bounds).

Shapes: ``obs [B, *obs_shape]`` (vector observations); actions ``[B, d]`` with ``d = action_space.shape[0]``.

- :class:`DeterministicActor` (DDPG, TD3): μ(s) = tanh(MLP(s)), ``forward(obs) -> [B, d]``.
- :class:`TanhGaussianActor` (SAC): ``forward(obs) ->`` :class:`TanhGaussian` with state-dependent mean and
  log-std (one linear head of width 2d, split in two), log-std clamped to [-20, 2] as in SAC's reference code.
"""
from __future__ import annotations

from typing import Sequence

import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.distributions import TanhGaussian
from lightning_pg.networks.encoders import make_encoder

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class DeterministicActor(nn.Module):
    def __init__(self, observation_space: spaces.Box, act_dim: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        self.body = make_encoder(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.body.out_features, act_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.head(self.body(obs)).float())


class TanhGaussianActor(nn.Module):
    def __init__(self, observation_space: spaces.Box, act_dim: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        self.body = make_encoder(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.body.out_features, 2 * act_dim)

    def forward(self, obs: Tensor) -> TanhGaussian:
        mean, log_std = self.head(self.body(obs)).float().chunk(2, dim=-1)
        return TanhGaussian(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
