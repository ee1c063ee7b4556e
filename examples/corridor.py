"""A custom environment for the README's example: walk right along a corridor to its end.

    PYTHONPATH=examples python -m lightning_pg fit --config configs/reinforce_cartpole.yaml \\
        --model.env_id corridor:Corridor --model.env_kwargs '{size: 8, max_episode_steps: 100}'

Any ``gymnasium.Env`` subclass works the same way, named ``"module:Class"`` (its module importable).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Position 0 to ``size - 1``; actions 0 (left) and 1 (right); -1 per step, the episode ends at the far end."""

    def __init__(self, size: int = 8):
        self.size = size
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.position / (self.size - 1)], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = 0
        return self._obs(), {}

    def step(self, action):
        self.position = int(np.clip(self.position + (1 if int(action) == 1 else -1), 0, self.size - 1))
        return self._obs(), -1.0, self.position == self.size - 1, False, {}
