"""Atari's one training wrapper that gymnasium lacks, named in the Atari configs' ``env_wrappers``.

The standard preprocessing is otherwise gymnasium's: ``AtariPreprocessing`` (no-op starts, frame skip 4, 84x84
grey), ``FrameStackObservation`` (4 frames) and ``ClipReward`` (training only, as the RL Zoo does).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym


class EpisodicLife(gym.Wrapper):
    """A lost life ends the training episode (the value of the state after it is not bootstrapped), but the game
    goes on: the next ``reset`` continues it with a no-op step rather than a new game, so the agent also learns
    the later stages of a game (Mnih et al. 2015; SB3's ``EpisodicLifeEnv``). For training envs only
    (``training_only: true``): evaluation plays whole games and reports their score."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a life was lost: carry on from where the game stands
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE at the start of a game and after each lost life: games such as Breakout wait for it to launch the
    ball, and a policy that has not learned to press it would wait until the emulator's frame limit (108,000
    frames, 30 minutes of play). SB3's ``FireResetEnv`` presses it at reset only."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if env.unwrapped.get_action_meanings()[1] != "FIRE":
            raise ValueError(f"FireReset needs FIRE as action 1, but this game's actions are "
                             f"{env.unwrapped.get_action_meanings()}")
        self.lives = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if lives < self.lives and not (terminated or truncated):
            obs, more, terminated, truncated, info = self.env.step(1)
            reward += more
        self.lives = lives
        return obs, reward, terminated, truncated, info
