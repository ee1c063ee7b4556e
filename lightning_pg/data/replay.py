"""Replay data for DDPG, TD3 and SAC: a ring buffer in preallocated tensors, and the iterable that fills it."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lightning_pg.data.base import EnvIterable, EnvSettings, as_tensor

if TYPE_CHECKING:
    from lightning_pg.algorithms.off_policy import OffPolicyModule

WARMUP_CHUNK = 1_000  # random warm-up steps per batch: few Lightning steps, yet the progress bar moves


class ReplayBuffer:
    """Transitions (s, a, r, s') in preallocated tensors of ``capacity`` rows; the oldest are overwritten.

    Fields, row i one transition: ``obs [N, *obs_shape]``, ``actions [N, d]`` (the actor's [-1, 1] scale),
    ``rewards [N]``, ``next_obs [N, *obs_shape]`` (the TRUE next observation: on a time-limit cut the
    episode's final observation, not the first one of the next episode), ``terminated [N]`` and
    ``truncated [N]`` (bool, kept apart: only termination cuts the bootstrap). Float observations are stored
    as float32. ``pos`` is the next row to write, ``size`` the rows filled.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype, act_dim: int):
        obs_dtype = torch.float32 if obs_dtype.is_floating_point else obs_dtype
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.data = {
            "obs": torch.zeros(capacity, *obs_shape, dtype=obs_dtype),
            "actions": torch.zeros(capacity, act_dim),
            "rewards": torch.zeros(capacity),
            "next_obs": torch.zeros(capacity, *obs_shape, dtype=obs_dtype),
            "terminated": torch.zeros(capacity, dtype=torch.bool),
            "truncated": torch.zeros(capacity, dtype=torch.bool),
        }

    def add(self, **rows: Any) -> None:
        """Append ``n`` transitions: one array or tensor of ``n`` rows per field."""
        n = len(rows["rewards"])
        end = self.pos + n
        where: slice | Tensor = slice(self.pos, end) if end <= self.capacity else torch.arange(self.pos, end) % self.capacity
        for key, value in rows.items():
            self.data[key][where] = torch.as_tensor(value)
        self.pos, self.size = end % self.capacity, min(self.size + n, self.capacity)

    def sample(self, n: int) -> dict[str, Tensor]:
        """``n`` transitions drawn uniformly with replacement (torch's global RNG): ``{field: [n, ...]}``."""
        index = torch.randint(0, self.size, (n,))
        return {key: value[index] for key, value in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Position, size and the filled rows (a copy of ``size`` rows, not the whole preallocation)."""
        filled = {k: v if self.size == self.capacity else v[: self.size].clone() for k, v in self.data.items()}
        return {"capacity": self.capacity, "pos": self.pos, "size": self.size, **filled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size, pos = int(state["size"]), int(state["pos"])
        if int(state["capacity"]) == self.capacity:  # the same ring: contents and position exactly, no gather
            for key, value in self.data.items():
                value[:size] = state[key][:size]
            self.pos, self.size = pos, size
            return
        # another buffer_size: keep the newest transitions, oldest first
        order = torch.cat([torch.arange(pos, size), torch.arange(0, pos)])[-self.capacity:]
        for key, value in self.data.items():
            value[: len(order)] = state[key][order]
        self.pos, self.size = len(order) % self.capacity, len(order)


class ReplayIterable(EnvIterable):
    """Each batch: play ``train_freq`` steps of every env, store them, sample ``gradient_steps`` minibatches.

    The first ``learning_starts`` env steps (counted by ``module.num_timesteps``, so a resumed run does not
    redo them) use uniform random actions from torch's seeded RNG, in batches of up to ``WARMUP_CHUNK`` env
    steps without updates. After that ``explore(obs)`` acts (actions in [-1, 1], ``act_dim`` wide), and
    ``episodes_ended(envs)`` hears of every episode end (exploration noise resets). Updates start once the
    buffer holds ``min(learning_starts, batch_size)`` transitions, which only matters after resuming without
    a saved buffer. ``save_buffer``: keep the buffer in the iterable's checkpoint state.

    Batch: ``obs [G, B, *obs_shape]``, ``actions [G, B, d]``, ``rewards``, ``terminated``, ``truncated``
    ``[G, B]``, ``next_obs [G, B, *obs_shape]`` (G = ``gradient_steps``, B = ``batch_size``; absent while there
    is nothing to learn from), plus ``env_steps`` and the finished episodes' returns and lengths.
    """

    def __init__(
        self, module: "OffPolicyModule", envs: EnvSettings, observation_space: spaces.Box, act_dim: int, *,
        buffer_size: int, learning_starts: int, batch_size: int, train_freq: int, gradient_steps: int,
        save_buffer: bool, explore: Callable[[Tensor], Tensor], episodes_ended: Callable[[np.ndarray], None],
    ):
        super().__init__(module, envs)
        obs_dtype = torch.from_numpy(np.zeros(0, observation_space.dtype)).dtype
        self.buffer = ReplayBuffer(buffer_size, observation_space.shape, obs_dtype, act_dim)
        self.act_dim, self.learning_starts, self.batch_size = act_dim, learning_starts, batch_size
        self.train_freq, self.gradient_steps, self.save_buffer = train_freq, gradient_steps, save_buffer
        self.explore, self.episodes_ended = explore, episodes_ended
        self.min_size = max(1, min(learning_starts, batch_size))

    def collect(self) -> dict[str, Any]:
        module = self.module
        if self.obs is None:
            self.reset()
        warmup = module.num_timesteps < self.learning_starts
        num_envs = self.settings.num_envs
        steps = math.ceil(min(self.learning_starts - module.num_timesteps, WARMUP_CHUNK) / num_envs) if warmup \
            else self.train_freq
        returns: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        for _ in range(steps):
            obs = as_tensor(self.obs)
            if warmup:
                actions = torch.rand(num_envs, self.act_dim) * 2.0 - 1.0
            else:
                with torch.no_grad():
                    actions = self.explore(obs.to(module.device)).cpu()
            next_obs, rewards, terminated, truncated, info = self.step(actions)
            ended = np.flatnonzero(terminated | truncated)
            if len(ended):  # the true last observations replace the reset ones (SAME_STEP autoreset)
                next_obs = next_obs.copy()
                next_obs[ended] = self.final_obs(info, ended)
                episode_returns, episode_lengths = self.episode_stats(ended)
                returns.append(episode_returns)
                lengths.append(episode_lengths)
                self.episodes_ended(ended)
            self.buffer.add(obs=obs, actions=actions, rewards=rewards, next_obs=next_obs, terminated=terminated,
                            truncated=truncated)
        batch: dict[str, Any] = {"env_steps": steps * num_envs}
        if returns:
            batch["episode_returns"], batch["episode_lengths"] = np.concatenate(returns), np.concatenate(lengths)
        if not warmup and self.buffer.size >= self.min_size:
            shape = (self.gradient_steps, self.batch_size)
            sample = self.buffer.sample(shape[0] * shape[1])
            batch.update({key: value.view(*shape, *value.shape[1:]) for key, value in sample.items()})
        return batch

    def rank_state(self) -> dict[str, Any]:
        """The shared iterable state (RNGs, envs, observations) and, unless ``save_replay_buffer`` is off, the
        buffer's filled rows and position."""
        state = super().rank_state()
        if self.save_buffer:
            state["replay_buffer"] = self.buffer.state_dict()
        return state

    def load_rank_state(self, state: dict[str, Any]) -> None:
        if "replay_buffer" in state:
            self.buffer.load_state_dict(state["replay_buffer"])
        else:
            rank_zero_info(f"{type(self.module).__name__}: no replay buffer in the checkpoint (save_replay_buffer="
                           "False): refilling it with the current policy, without random warm-up, before updating.")
        super().load_rank_state(state)
