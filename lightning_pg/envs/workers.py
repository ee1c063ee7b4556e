"""``vectorization: async``: the sub-envs stepped in parallel by worker processes, each stepping a group of them.

gymnasium's AsyncVectorEnv gives every sub-env a process of its own: 8 envs on 2 cores are 8 processes taking
turns, and 8 pipe round trips per step. Here ``workers`` processes (by default one per core, at most one per
env) each own ``num_envs / workers`` envs and step them one after the other: one round trip per worker and
step, and as many envs stepping at once as there are cores. The autoreset is the SAME_STEP mode of every
other vector env here (an env that ends is reset in the same step; its true last observation is in
``info["final_obs"]``).
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import time
import weakref
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space


class WorkerError(RuntimeError):
    """An env's exception in a worker process, raised again in the training process: its message, and the name
    of its type (``type_name``), since its class may not be importable or constructible here."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


def default_workers(num_envs: int) -> int:
    return max(1, min(num_envs, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class WorkerVectorEnv(gym.vector.VectorEnv):
    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int | None = None):
        self.num_envs = len(env_fns)
        workers = workers or default_workers(self.num_envs)
        dummy = env_fns[0]()  # the spaces, read in this process
        self.single_observation_space, self.single_action_space = dummy.observation_space, dummy.action_space
        self.metadata, self.spec, self.render_mode = dummy.metadata, dummy.spec, dummy.render_mode
        dummy.close()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.groups = [list(group) for group in np.array_split(np.arange(self.num_envs), workers)]
        # fork where there is one (Linux, macOS): the env classes need not be importable by name, as with spawn
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        self.pipes, self.processes = [], []
        for group in self.groups:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, parent, [env_fns[i] for i in group]), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.closed = False
        close_at_exit(self)

    def _call(self, command: str, args: Sequence[Any]) -> list[list[Any]]:
        for pipe, arg in zip(self.pipes, args):
            pipe.send((command, arg))
        answers = [pipe.recv() for pipe in self.pipes]  # every worker answers before any error is raised
        for ok, answer in answers:
            if not ok:
                raise WorkerError(*answer)
        return [answer for _, answer in answers]

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        seeds = [None] * self.num_envs if seed is None else \
            [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
        results = self._call("reset", [([seeds[i] for i in group], options) for group in self.groups])
        return self._as_space(np.concatenate(results)), {}

    def step(self, actions: Any):
        """The infos hold the true last observations of the episodes that ended (``final_obs``, ``_final_obs``),
        which is all the training loop reads; the envs' own info dicts stay in the workers."""
        actions = np.asarray(actions)
        results = self._call("step", [actions[group] for group in self.groups])
        obs, rewards, terminated, truncated = (np.concatenate([r[k] for r in results]) for k in range(4))
        obs = self._as_space(obs)
        infos: dict[str, Any] = {}
        ended = [(group[i], final) for group, r in zip(self.groups, results) for i, final in r[4]]
        if ended:
            finals = np.empty(self.num_envs, dtype=object)
            for i, final in ended:
                finals[i] = self._as_space(final)
            infos = {"final_obs": finals, "_final_obs": np.isin(np.arange(self.num_envs), [i for i, _ in ended])}
        return obs, rewards, terminated, truncated, infos

    def _as_space(self, obs: np.ndarray) -> np.ndarray:
        """In the space's dtype, as a sync vector env writes them (an env may return float64 for float32)."""
        return obs.astype(self.single_observation_space.dtype, copy=False)

    def close_extras(self, **kwargs: Any) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("close", None))
            except OSError:  # a worker that has died
                pass
        deadline = time.monotonic() + 5
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()  # (they ignore SIGTERM, see _worker)
                process.join()
        for pipe in self.pipes:
            pipe.close()
        stop_closing_at_exit(self)

    def __getstate__(self) -> dict:
        raise TypeError("async envs live in worker processes and do not pickle")


#: what holds running worker processes (async envs, A3C's gradient workers). Closed at exit, before
#: multiprocessing's own exit handler (which sends daemon workers a SIGTERM they ignore, and would then wait for
#: them forever).
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def close_at_exit(holder: Any) -> None:
    """``holder.close()`` at the interpreter's exit unless :func:`stop_closing_at_exit` says it closed."""
    _OPEN.add(holder)


def stop_closing_at_exit(holder: Any) -> None:
    _OPEN.discard(holder)


@atexit.register
def _close_all() -> None:
    for holder in list(_OPEN):
        holder.close()


def _worker(pipe: Any, parent_pipe: Any, env_fns: list[Callable[[], gym.Env]]) -> None:
    # Ctrl+C and SIGTERM reach the whole process group; the main process decides how the run stops (finish the
    # batch, save, close the workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_pipe.close()
    envs, broken = [], None
    try:
        try:
            envs = [fn() for fn in env_fns]
        except Exception as exc:  # noqa: BLE001 - said in answer to every command, as a step's error would be
            broken = exc
        while True:
            command, arg = pipe.recv()
            if command == "close":
                break
            try:
                if broken is not None:
                    raise broken
                if command == "reset":
                    seeds, options = arg
                    pipe.send((True, np.stack([env.reset(seed=s, options=options)[0] for env, s in zip(envs, seeds)])))
                else:
                    pipe.send((True, _step(envs, arg)))
            except Exception as exc:  # noqa: BLE001 - the env's error, raised again in the main process
                pipe.send((False, (type(exc).__name__, str(exc))))
    except (EOFError, OSError, KeyboardInterrupt):  # the main process is gone
        pass
    finally:
        for env in envs:
            env.close()


def _step(envs: list[gym.Env], actions: np.ndarray) -> tuple:
    """A group's step: stacked observations, rewards and flags, and ``(index, last observation)`` of each env
    whose episode ended (SAME_STEP: its next episode starts in this same step)."""
    obs, rewards = [], np.zeros(len(envs))
    terminated, truncated = np.zeros(len(envs), bool), np.zeros(len(envs), bool)
    finals = []
    for i, (env, action) in enumerate(zip(envs, actions)):
        o, rewards[i], terminated[i], truncated[i], _ = env.step(action)
        if terminated[i] or truncated[i]:
            finals.append((i, o))
            o, _ = env.reset()
        obs.append(o)
    return np.stack(obs), rewards, terminated, truncated, finals
