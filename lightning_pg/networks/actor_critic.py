"""Stochastic policy π(a|s) and state value V(s) for REINFORCE, A2C and PPO.

Two separate networks over the same observation (Stable-Baselines3's default for MLP policies): sharing a
body couples the value loss scale to the policy's features.

Shapes: ``obs [B, *obs_shape]``; ``x = normalize(obs)`` (the identity unless observation normalization is
on); ``dist(x)`` is a :class:`Categorical` (actions ``[B]`` long) or a :class:`DiagGaussian` with a
state-independent log-std (actions ``[B, act_dim]``); ``value(x) [B]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.distributions import Categorical, DiagGaussian
from lightning_pg.networks.encoders import make_encoder
from lightning_pg.networks.normalize import RunningMeanStd


class CategoricalHead(nn.Linear):
    def forward(self, features: Tensor) -> Categorical:
        return Categorical(super().forward(features))


class GaussianHead(nn.Module):
    def __init__(self, in_features: int, act_dim: int, log_std_init: float = 0.0):
        super().__init__()
        self.mean = nn.Linear(in_features, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, features: Tensor) -> DiagGaussian:
        return DiagGaussian(self.mean(features), self.log_std)


def policy_head(action_space: spaces.Space, in_features: int, log_std_init: float = 0.0) -> nn.Module:
    if isinstance(action_space, spaces.Discrete):
        return CategoricalHead(in_features, int(action_space.n))
    return GaussianHead(in_features, int(np.prod(action_space.shape)), log_std_init)


class ActorCritic(nn.Module):
    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        with_value: bool = True,
        ortho_init: bool = False,
        log_std_init: float = 0.0,
        normalize_obs: bool = False,
    ):
        super().__init__()
        self.obs_rms = RunningMeanStd(observation_space.shape) if normalize_obs else None
        self.pi_body = make_encoder(observation_space, hidden_sizes, activation)
        self.pi_head = policy_head(action_space, self.pi_body.out_features, log_std_init)
        self.v_body = self.v_head = None
        if with_value:
            self.v_body = make_encoder(observation_space, hidden_sizes, activation)
            self.v_head = nn.Linear(self.v_body.out_features, 1)
        if ortho_init:
            self._orthogonal_init()

    def normalize(self, obs: Tensor) -> Tensor:
        """Observations as the networks see them (running-normalized when that is on)."""
        return obs if self.obs_rms is None else self.obs_rms.normalize(obs)

    def dist(self, x: Tensor) -> Categorical | DiagGaussian:
        return self.pi_head(self.pi_body(x))

    def value(self, x: Tensor) -> Tensor:
        return self.v_head(self.v_body(x)).squeeze(-1)

    def _orthogonal_init(self) -> None:
        """PPO's init (Andrychowicz et al. 2021): hidden gain √2, policy output 0.01, value output 1."""
        for body in (self.pi_body, self.v_body):
            for layer in body.modules() if body is not None else ():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    nn.init.orthogonal_(layer.weight, math.sqrt(2))
                    nn.init.zeros_(layer.bias)
        out = self.pi_head.mean if isinstance(self.pi_head, GaussianHead) else self.pi_head
        nn.init.orthogonal_(out.weight, 0.01)
        nn.init.zeros_(out.bias)
        if self.v_head is not None:
            nn.init.orthogonal_(self.v_head.weight, 1.0)
            nn.init.zeros_(self.v_head.bias)
