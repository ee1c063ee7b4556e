r"""Action-value critics Q(s, a) for DDPG (one), TD3 and SAC (two, "twin").

:class:`QCritics` holds ``n`` independent MLPs over ``[s, a]`` as ONE stacked network: layer ``k`` keeps its
weights as ``[n, in, out]`` and runs one ``torch.baddbmm`` for all members. The maths is that of ``n``
separate ``nn.Linear`` MLPs (same initialization, independent parameters); the op count is that of one,
which is what a small MLP's update costs on a CPU (benchmarks/bare_offpolicy.py: SAC update 6.3 -> 5.3 ms).

Shapes: ``forward(obs [B, *obs_shape], actions [B, d]) -> [n, B]`` (float32): row i is Q_i(s, a).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.encoders import ACTIVATIONS


class QCritics(nn.Module):
    def __init__(
        self,
        observation_space: spaces.Box,
        act_dim: int,
        hidden_sizes: Sequence[int],
        n_critics: int = 2,
        activation: str = "relu",
    ):
        super().__init__()
        sizes = [int(np.prod(observation_space.shape)) + act_dim, *hidden_sizes, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, member by member
            self.weights.append(nn.Parameter(torch.empty(n_critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_critics, 1, fan_out).uniform_(-bound, bound)))
        self.activation = ACTIVATIONS[activation]
        self.n_critics = n_critics

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        x = torch.cat([obs.flatten(1).float(), actions.float()], dim=-1)
        x = x.unsqueeze(0).expand(self.n_critics, -1, -1)  # [n, B, in]: every member sees the same input
        *hidden, (weight, bias) = zip(self.weights, self.biases)  # (slicing a ParameterList builds a new one: slow)
        for w, b in hidden:
            x = self.activation(torch.baddbmm(b, x, w))  # [n, B, out] = b + x @ w, all members at once
        # the 1-wide output layer as a product-sum, not a matmul: Q comes out in float32 even when the matmuls
        # run in bf16 (autocast, or matmul_precision="medium"), and it is no slower
        return (x * weight.transpose(1, 2)).sum(-1) + bias.squeeze(-1)
