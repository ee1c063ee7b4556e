"""Evaluation episodes on a fresh vector env, separate from the training envs (GUIDE §4 item 10)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_pg.envs import make_vec_env

if TYPE_CHECKING:
    from lightning_pg.algorithms.base import RLModule

MAX_EVAL_ENVS = 16


def evaluate(
    model: "RLModule", n_episodes: int = 10, seed: int = 0, deterministic: bool = True
) -> tuple[float, float]:
    """Mean and standard deviation of the undiscounted return over ``n_episodes`` episodes.

    Each eval env plays a quota fixed in advance (``n_episodes`` split as evenly as possible over at most
    16 envs); episodes finished beyond an env's quota are ignored, so short episodes are not over-counted.
    Env ``i`` is seeded ``seed + i``. Stochastic evaluation (``deterministic=False``) draws from a forked
    torch RNG, so it leaves the training run's random stream untouched. Observation normalization, where
    the model has it, is applied with frozen statistics (``model.policy_actions``, as ``predict``).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    returns = episode_returns(model, n_episodes, seed, deterministic)
    return float(np.mean(returns)), float(np.std(returns))


def episode_returns(model: "RLModule", n_episodes: int, seed: int, deterministic: bool = True,
                    shard: tuple[int, int] = (0, 1)) -> list[float]:
    """The returns :func:`evaluate` averages. ``shard=(k, n)``: only eval envs ``k, k + n, ...`` (with their
    seeds and quotas), so that n processes each play a share of the same episodes (DDP's evaluation)."""
    total_envs = min(n_episodes, MAX_EVAL_ENVS)
    quotas = np.full(total_envs, n_episodes // total_envs)
    quotas[: n_episodes % total_envs] += 1
    mine = np.arange(shard[0], total_envs, shard[1])
    if not len(mine):
        return []
    num_envs, quota = len(mine), quotas[mine]
    done = np.zeros(num_envs, dtype=int)
    running = np.zeros(num_envs)  # the return of each env's current episode
    returns: list[float] = []
    settings = model.env_settings  # the training envs' kind, wrappers and vectorization; num_envs of its own
    envs = make_vec_env(settings.env_id, settings.env_kwargs, num_envs, env_wrappers=settings.env_wrappers,
                        vectorization=settings.vectorization, training=False)
    try:
        with torch.random.fork_rng(devices=[]):
            obs, _ = envs.reset(seed=[seed + int(i) for i in mine])
            while (done < quota).any():
                obs, rewards, terminated, truncated, _ = envs.step(model.policy_actions(obs, deterministic))
                running += rewards
                for i in np.flatnonzero(terminated | truncated):  # SAME_STEP autoreset: env i starts afresh
                    if done[i] < quota[i]:
                        returns.append(float(running[i]))
                        done[i] += 1
                    running[i] = 0.0
    finally:
        envs.close()
    return returns
