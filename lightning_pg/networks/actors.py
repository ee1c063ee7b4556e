"""Actors for the off-policy algorithms, acting in [-1, 1]^d (the module rescales into the env's bounds).

Shapes: ``obs [B, *obs_shape]`` (vectors through an MLP, uint8 images through a Nature CNN and an MLP); actions
``[B, d]`` with ``d = action_space.shape[0]``.

- :class:`DeterministicActor` (DDPG, TD3): μ(s) = tanh(MLP(s)), ``forward(obs) -> [B, d]``.
- :class:`TanhGaussianActor` (SAC): ``forward(obs) ->`` :class:`TanhGaussian` with state-dependent mean and
  log-std (one linear head of width 2d, split in two), log-std clamped to [-20, 2] as in SAC's reference code.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.actor_critic import LOG_SQRT_2PI
from lightning_pg.networks.encoders import make_encoder

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_LOG_2 = math.log(2.0)


class TanhGaussian:
    r"""a = tanh(u), u ~ N(mean, diag(exp(log_std)²)): SAC's squashed Gaussian. Shapes: mean, log_std ``[B, d]``.

    Change of variables: :math:`\log\pi(a|s) = \sum_i [\log\mathcal N(u_i) - \log(1 - \tanh^2 u_i)]`, with the
    numerically stable :math:`\log(1 - \tanh^2 u) = 2(\log 2 - u - \mathrm{softplus}(-2u))`: finite for any
    u, where ``log(1 - a**2)`` is -inf once tanh rounds to ±1 (|u| > 9 in float32) and ``atanh`` of a clipped
    action is wrong there. The log-prob is computed from u, never from a.
    """

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.mean = mean.float()
        self.log_std = log_std.float()

    def rsample(self) -> tuple[Tensor, Tensor]:
        """A reparameterized action ``[B, d]`` (gradients flow into mean and log_std) and its log-prob ``[B]``."""
        u = self.mean + self.log_std.exp() * torch.randn_like(self.mean)
        return torch.tanh(u), self.log_prob_pre_tanh(u)

    def sample(self) -> Tensor:
        """An action ``[B, d]`` without its log-prob (acting); the same random draw as ``rsample``."""
        return torch.tanh(self.mean + self.log_std.exp() * torch.randn_like(self.mean))

    def log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        """log π(tanh(u)|s) for pre-squash samples ``u [B, d]``; returns ``[B]``."""
        z = (u - self.mean) * torch.exp(-self.log_std)
        gaussian = -0.5 * z.square() - self.log_std - LOG_SQRT_2PI
        log_det = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))  # log(1 - tanh(u)^2), stable
        return (gaussian - log_det).sum(-1)

    def mode(self) -> Tensor:
        return torch.tanh(self.mean)


class DeterministicActor(nn.Module):
    def __init__(self, observation_space: spaces.Space, act_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.body = make_encoder(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.body.out_features, act_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.head(self.body(obs)).float())


class TanhGaussianActor(nn.Module):
    def __init__(self, observation_space: spaces.Space, act_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.body = make_encoder(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.body.out_features, 2 * act_dim)

    def forward(self, obs: Tensor) -> TanhGaussian:
        mean, log_std = self.head(self.body(obs)).float().chunk(2, dim=-1)
        return TanhGaussian(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
