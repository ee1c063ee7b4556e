"""Small custom environments for the tests, loaded by entry point ("tests.envs:ClassName")."""
import time

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


class TupleActions(TwoArmedBandit):
    """An action space REINFORCE/PPO cannot handle (a Tuple)."""

    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))


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


class AlternatingEnd(gym.Env):
    """obs = [t / 10]; reward 1 per step. Even-numbered episodes terminate after 2 steps; odd ones run on
    until the time limit (use ``max_episode_steps=3``), so one rollout holds terminations and cuts."""

    observation_space = spaces.Box(0.0, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.episode = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 2 == 0 and self.t == 2
        return np.array([self.t / 10], np.float32), 1.0, terminated, False, {}


class ShortHorizon(gym.Env):
    """Bootstrapping through the time limit changes the best action.

    Two states, one-hot observed, each episode starts in either with probability 1/2 and lasts ONE step
    (``max_episode_steps=1``: every episode is cut by the time limit, none terminates). In A, action 0
    pays 1 and stays in A; action 1 pays 0 and moves to B. In B every action pays 2 and stays in B.
    With γ = 0.9 the task continues past the cut: V(B) = 20, so in A action 1 (worth 0.9 · 20 = 18) beats
    action 0 (worth at most 10). An agent that treats the cut as termination sees 1 vs 0 and picks 0.
    """

    observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)

    def __init__(self, continuous=False):
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else spaces.Discrete(2)
        self.continuous = continuous

    def _obs(self):
        return np.array([1.0, 0.0] if self.state == 0 else [0.0, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        go = float(np.asarray(action).reshape(-1)[0]) > 0 if self.continuous else int(action) == 1
        if self.state == 1:
            return self._obs(), 2.0, False, False, {}
        if go:
            self.state = 1
            return self._obs(), 0.0, False, False, {}
        return self._obs(), 1.0, False, False, {}


class RecordActions(gym.Env):
    """A 1-D continuous env in [-2, 2] that records every action it receives (class attribute ``received``)."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    received: list = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        RecordActions.received.append(np.array(action, copy=True))
        return np.zeros(1, np.float32), 0.0, False, False, {}


class PixelCartPole(gym.Wrapper):
    """CartPole observed through a 64x64 RGB image drawn with numpy (cart column, pole tip row)."""

    def __init__(self):
        super().__init__(gym.make("CartPole-v1"))
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)

    def _draw(self, state):
        image = np.zeros((64, 64, 3), np.uint8)
        cart = int(np.clip((state[0] + 2.4) / 4.8 * 63, 0, 63))
        tip = int(np.clip(cart + 20 * np.sin(state[2]), 0, 63))
        image[48:56, max(cart - 3, 0) : cart + 4, 0] = 255
        image[20:48, tip, 1] = 255
        return image

    def reset(self, **kwargs):
        state, info = self.env.reset(**kwargs)
        return self._draw(state), info

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(action)
        return self._draw(state), reward, terminated, truncated, info


class RaisesOnReset(NaNAfter):
    """Raises inside reset()."""

    def reset(self, *, seed=None, options=None):
        raise ValueError("could not load the level file")


class HugeRewardAfter(NaNAfter):
    """Finite but huge rewards (1e30) after ``steps`` steps: the losses overflow to inf."""

    def step(self, action):
        self.t += 1
        reward = 1e30 if self.t >= self.steps else 1.0
        return np.zeros(2, np.float32), reward, False, self.t % 10 == 0, {}


class NowOrLater(gym.Env):
    """Continuous 1-D action where bootstrapping through a time limit decides the best first action.

    Step 0 (obs [1, 0]): reward ``a`` (spend now), and the agent saves ``w = (1 - a) / 2`` for later.
    Every later step (obs [0, w]): reward ``w`` whatever the action; the env never terminates, so under
    ``max_episode_steps`` every episode is CUT by the time limit. With γ = 0.9:

    - bootstrapping at the cut (right): Q(later) = w / (1 - γ) = 10 w, so Q(start, a) = a + 4.5 (1 - a): a = -1
    - treating the cut as a termination (wrong, max_episode_steps=2): Q(later) = w, so
      Q(start, a) = a + 0.45 (1 - a): a = +1

    ``terminate_at``: end the episode with ``terminated=True`` after that many steps instead.
    """

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, terminate_at=None):
        self.terminate_at = terminate_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.saved = 0, 0.0
        return np.array([1.0, 0.0], np.float32), {}

    def step(self, action):
        a = float(np.clip(action[0], -1.0, 1.0))
        if self.t == 0:
            reward, self.saved = a, (1.0 - a) / 2
        else:
            reward = self.saved
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([0.0, self.saved], np.float32), reward, terminated, False, {}


class SlowAfter(NaNAfter):
    """A costly simulator: after ``fast`` steps (counted over the env's life), each step burns ``seconds`` of CPU
    in Python."""

    def __init__(self, fast=300, seconds=1.0):
        super().__init__()
        self.fast, self.seconds, self.total = fast, seconds, 0

    def step(self, action):
        self.total += 1
        if self.total > self.fast:
            end = time.perf_counter() + self.seconds
            while time.perf_counter() < end:
                pass
        return np.zeros(2, np.float32), 1.0, False, self.total % 50 == 0, {}


class SeededLength(gym.Env):
    """Episodes whose length and return name the env and the episode: the env seeded ``s`` (its first seeded
    reset; a vector env seeds its env ``i`` with ``seed + i``) plays episodes of ``s + 1`` steps, and its k-th
    episode (k = 0, 1, ...) pays ``10 s + k`` at its last step, nothing before."""

    observation_space = spaces.Box(0.0, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.index, self.episode = 0, -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.index, self.episode = seed, -1
        self.t, self.episode = 0, self.episode + 1
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == self.index + 1
        reward = float(10 * self.index + self.episode) if done else 0.0
        return np.array([self.t], np.float32), reward, done, False, {}


class OffCenterBounds(gym.Env):
    """Actions in an off-center box, [0, 4] x [-3, 1]: rescaling from [-1, 1] must shift as well as stretch."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(np.array([0.0, -3.0], np.float32), np.array([4.0, 1.0], np.float32))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


class Identity(gym.Env):
    """Stable-Baselines3's identity task: observe one of ``n`` values, get reward 1 for the action equal to it;
    a new value each step, ``length``-step episodes (100 by default: a perfect policy scores 100)."""

    def __init__(self, n: int = 4, length: int = 100):
        self.observation_space = spaces.Discrete(n)
        self.action_space = spaces.Discrete(n)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.state = 0, int(self.np_random.integers(self.observation_space.n))
        return self.state, {}

    def step(self, action):
        reward = float(int(action) == self.state)
        self.t += 1
        self.state = int(self.np_random.integers(self.observation_space.n))
        return self.state, reward, False, self.t >= self.length, {}


class BusyStep(gym.Env):
    """A costly step: about ``ms`` milliseconds of CPU per step (a simulator's share of the work), CartPole-like
    bookkeeping otherwise: 4 float observations, 2 actions, 200-step episodes, reward 1. ``raise_at``: raise a
    ValueError at that step (a bug inside an env, in whichever process it runs)."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, ms: float = 1.0, raise_at: int | None = None):
        self.ms, self.raise_at, self.total = ms, raise_at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        end = time.perf_counter() + self.ms / 1000
        while time.perf_counter() < end:
            pass
        self.t += 1
        self.total += 1
        if self.raise_at is not None and self.total >= self.raise_at:
            raise ValueError(f"broken at step {self.total}")
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), 1.0, False, self.t >= 200, {}


class SimError(Exception):
    """An env's own exception whose constructor takes more than a message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")


class RaisesSimError(BusyStep):
    def step(self, action):
        if self.total >= 10:
            raise SimError(7, "solver diverged")
        return super().step(action)


class PixelDot(gym.Env):
    """A dot on a 36x36 grey image (the Nature CNN's smallest input), moved left and right by a continuous action
    in [-1, 1]; reward -|position|; 20-step episodes."""

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _image(self):
        image = np.zeros((36, 36, 1), np.uint8)
        image[16:20, int(np.clip((self.x + 1) * 17.5, 0, 35)), 0] = 255
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self._image(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.2 * float(np.asarray(action).reshape(-1)[0]), -1, 1))
        self.t += 1
        return self._image(), -abs(self.x), False, self.t >= 20, {}


class ImageIdentity(gym.Env):
    """The identity task told by a picture, as a Dict observation: ``image`` (36x36 grey) is lit on its left or
    right half, ``t`` is the episode's progress in [0, 1]; reward 1 for the action naming the lit half (0 left,
    1 right), a new half each step, 20-step episodes (a perfect policy scores 20). Only the image tells the
    answer, so a policy that solves it reads the image through its CNN."""

    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (36, 36, 1), np.uint8),
                                     "t": spaces.Box(0.0, 1.0, (1,), np.float32)})
    action_space = spaces.Discrete(2)

    def _observation(self):
        image = np.zeros((36, 36, 1), np.uint8)
        image[:, 18 * self.side:18 * (self.side + 1)] = 255
        return {"image": image, "t": np.array([self.t / 20], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        return self._observation(), {}

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        self.side = int(self.np_random.integers(2))
        return self._observation(), reward, False, self.t >= 20, {}


class RenderedPixelDot(PixelDot):
    """PixelDot that draws rgb_array frames (for play's videos): the observation at 3x, in red, cut to 107x107
    (an odd size on purpose: H.264 needs even sizes, so the mp4 writer pads it to 108x108)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((107, 107, 3), np.uint8)
        frame[..., 0] = self._image()[:, :, 0].repeat(3, 0).repeat(3, 1)[:107, :107]
        return frame
