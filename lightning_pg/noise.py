r"""Exploration noise for deterministic actors (DDPG, TD3), added in the [-1, 1] action scale, one row per env.

- ``"normal"``: independent :math:`\epsilon_t \sim \mathcal N(0, \sigma^2)` each step (TD3's choice).
- ``"ornstein-uhlenbeck"``: temporally correlated
  :math:`x_{t+1} = x_t + \theta(\mu - x_t)\,dt + \sigma\sqrt{dt}\,\epsilon_t` (DDPG's paper), reset to 0 when an
  env's episode ends; θ = 0.15 and dt = 0.01 as in Stable-Baselines3.

Both draw from torch's global RNG (seeded by ``seed_everything`` and checkpointed with the replay data), and
their state (the OU process value) is a tensor, saved with the model.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class ActionNoise:
    def __init__(self, num_envs: int, act_dim: int, sigma: float):
        self.sigma = sigma
        self.state = torch.zeros(num_envs, act_dim)  # the OU process value; unused by normal noise

    def sample(self) -> Tensor:
        """Noise ``[num_envs, act_dim]`` for this step."""
        raise NotImplementedError

    def reset(self, envs: np.ndarray) -> None:
        """Episodes of ``envs`` (indices) ended."""

    def state_dict(self) -> dict[str, Tensor]:
        return {"state": self.state.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> bool:
        """Restore the process where it fits (the same num_envs and action size); False when it restarts at 0."""
        if state["state"].shape != self.state.shape:
            return False
        self.state.copy_(state["state"])
        return True


class NormalActionNoise(ActionNoise):
    def sample(self) -> Tensor:
        return self.sigma * torch.randn_like(self.state)


class OrnsteinUhlenbeckActionNoise(ActionNoise):
    theta, dt = 0.15, 1e-2

    def sample(self) -> Tensor:
        self.state += self.theta * -self.state * self.dt + self.sigma * math.sqrt(self.dt) * torch.randn_like(self.state)
        return self.state.clone()

    def reset(self, envs: np.ndarray) -> None:
        self.state[torch.from_numpy(envs)] = 0.0


NOISES = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}
