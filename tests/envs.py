"""Small custom environments for the tests, loaded by entry point ("tests.envs:ClassName")."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TwoArmedBandit(gym.Env):
    """One-step episodes; a constant observation; arm a pays ``payoffs[a]`` (deterministic)."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, payoffs=(1.0, 3.0)):
        self.payoffs = payoffs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), float(self.payoffs[int(action)]), True, False, {}


class TwoDiscreteHeads(TwoArmedBandit):
    """An action space REINFORCE/PPO cannot handle (MultiDiscrete)."""

    action_space = spaces.MultiDiscrete([2, 2])


class NaNAfter(gym.Env):
    """Returns a NaN observation after ``steps`` steps."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, steps=50):
        self.steps, self.t = steps, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, np.nan if self.t >= self.steps else 0.0, np.float32)
        return obs, 1.0, False, self.t % 10 == 0, {}


class RaisesAfter(NaNAfter):
    """Raises inside step() after ``steps`` steps."""

    def step(self, action):
        self.t += 1
        if self.t >= self.steps:
            raise RuntimeError("simulator exploded")
        return np.zeros(2, np.float32), 1.0, False, self.t % 10 == 0, {}


class Counter(gym.Env):
    """obs = [t / 10]: the step count inside the episode; reward 1 per step; never terminates.

    With ``max_episode_steps`` every episode is cut by the time limit, so the true final observation
    ([T / 10]) differs from the first observation of the next episode ([0]).
    """

    observation_space = spaces.Box(0.0, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t / 10], np.float32), 1.0, False, False, {}
