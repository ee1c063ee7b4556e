"""The part every environment-driven iterable shares: owning the vector env and stepping it safely."""
from __future__ import annotations

import pickle
import random
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import IterableDataset

from lightning_pg.envs import env_seed, make_vec_env
from lightning_pg.errors import EnvError
from lightning_pg.networks import RunningMeanStd
from lightning_pg.trust import sign, signed_by_this_user

if TYPE_CHECKING:
    from lightning_pg.algorithms.base import RLModule


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python global RNG states, as tensors and tuples of ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


class EnvSettings(NamedTuple):
    """Which environment a run plays: a gymnasium id (or entry point), ``gymnasium.make`` kwargs, copies."""

    env_id: str
    env_kwargs: dict[str, Any] | None
    num_envs: int
    env_wrappers: list[dict[str, Any]] | None = None
    vectorization: str = "sync"

    def __repr__(self) -> str:
        # What a checkpoint records to tell its envs' settings (``env_config``). Settings left at their defaults
        # are not named, so checkpoints written before env_wrappers and vectorization existed still match.
        named = [f"{name}={value!r}" for name, value in zip(self._fields, self)
                 if name in ("env_id", "env_kwargs", "num_envs") or value != self._field_defaults[name]]
        return f"EnvSettings({', '.join(named)})"


class RewardScaler:
    """VecNormalize's reward scaling: each reward divided by the running std of the discounted return.

    ``rms`` holds the statistics (a module buffer, checkpointed with the weights); the running discounted
    return of each env is state of the data (saved with the iterable).
    """

    def __init__(self, rms: RunningMeanStd, gamma: float):
        self.rms, self.gamma = rms, gamma
        self.discounted_return: Tensor | None = None

    def __call__(self, rewards: Tensor, dones: Any, valid: Tensor | None = None) -> Tensor:
        """``rewards``, ``dones`` and ``valid`` are ``[T, num_envs]``; only valid entries update the statistics."""
        if self.discounted_return is None:
            self.discounted_return = torch.zeros(rewards.shape[1], dtype=torch.float64, device=rewards.device)
        scaled = torch.empty_like(rewards)
        for t in range(len(rewards)):
            self.discounted_return = self.discounted_return * self.gamma + rewards[t]
            self.rms.update(self.discounted_return if valid is None else self.discounted_return[valid[t]])
            scaled[t] = self.rms.scale(rewards[t])
            self.discounted_return[torch.as_tensor(dones[t], device=rewards.device)] = 0.0
        return scaled


class EnvIterable(IterableDataset):
    """Plays a module's current policy in a vector env; subclasses define ``collect()`` (one batch).

    ``module`` is the run: its env-step count and budget (the iteration ends there), rank, device and the
    conversion of actions for the env (``env_actions``). Every setting comes in as an argument. The envs are
    built on first use, seeded from torch's global RNG (fixed by ``seed_everything``) with a per-rank offset.
    """

    def __init__(self, module: "RLModule", envs: EnvSettings, reward_scaler: RewardScaler | None = None):
        self.module, self.settings, self.reward_scaler = module, envs, reward_scaler
        self._warned_unpicklable = False
        self.envs = None
        self.obs: np.ndarray | None = None  # latest observation of every env, [num_envs, *obs_shape]
        # the running episode of every env: return and length so far (see step)
        self.episode_return: np.ndarray | None = None
        self.episode_length: np.ndarray | None = None
        self._ended: tuple[np.ndarray, np.ndarray] | None = None  # their values when the last step ended some

    def collect(self) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.module.budget_reached:
            yield self.collect()

    @property
    def holds_processes(self) -> bool:
        """Whether the envs run in worker processes (closed at teardown)."""
        return self.settings.vectorization == "async"

    def reset(self) -> np.ndarray:
        env_id, env_kwargs, num_envs, env_wrappers, vectorization = self.settings
        seed = None
        if self.envs is None:
            self.envs = make_vec_env(env_id, env_kwargs, num_envs, env_wrappers=env_wrappers, vectorization=vectorization)
            seed = env_seed(self.module.global_rank, num_envs)
            self.envs.action_space.seed(seed)
        try:
            self.obs, _ = self.envs.reset(seed=seed)
        except EnvError:
            raise
        except Exception as exc:
            raise self._env_failure("reset", exc) from exc
        self._check_finite(self.obs, "an observation from reset()")
        self.episode_return = np.zeros(len(self.obs))
        self.episode_length = np.zeros(len(self.obs), np.int64)
        return self.obs

    def step(self, actions: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Send ``actions`` (raw, as sampled) to the envs; returns ``(obs, reward, terminated, truncated, info)``."""
        try:
            obs, reward, terminated, truncated, info = self.envs.step(self.module.env_actions(actions))
        except EnvError:
            raise
        except Exception as exc:
            raise self._env_failure("step", exc) from exc
        self._check_finite(obs, "an observation")
        self._check_finite(reward, "a reward")
        if "_final_obs" in info:  # the last observation of an episode that ended (it may be bootstrapped from)
            self._check_finite(self.final_obs(info, np.flatnonzero(info["_final_obs"])), "a final observation")
        self.obs = obs
        # Episode returns and lengths are counted here rather than by gymnasium's RecordEpisodeStatistics
        # wrapper, which costs several times as much per vector step. SAME_STEP autoreset: an env that ended
        # has already started its next episode, so its counters restart now.
        self.episode_return += reward
        self.episode_length += 1
        ended = terminated | truncated
        if ended.any():
            self._ended = (self.episode_return.copy(), self.episode_length.copy())
            self.episode_return[ended] = 0.0
            self.episode_length[ended] = 0
        return obs, reward.astype(np.float32), terminated, truncated, info

    @staticmethod
    def final_obs(info: dict, envs: np.ndarray) -> np.ndarray:
        """True last observations (SAME_STEP autoreset puts them in ``info['final_obs']``) of ``envs``."""
        return np.stack([info["final_obs"][i] for i in envs])

    def episode_stats(self, envs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of the episodes that ``envs`` (a subset of those that ended) finished in the last step."""
        returns, lengths = self._ended
        return returns[envs].astype(np.float32), lengths[envs]

    def _check_finite(self, array: np.ndarray, what: str) -> None:
        # a sum is NaN or inf when any term is: one reduction instead of an elementwise pass and an all()
        if array.dtype.kind == "f" and not np.isfinite(array.sum()):
            raise EnvError(
                f"The environment '{self.settings.env_id}' returned {what} that is NaN or infinite after "
                f"{self.module.num_timesteps} env steps. Fix: find the cause in the env (or clip/guard it in a "
                "wrapper); training stopped before the bad value reached the networks."
            )

    def _env_failure(self, where: str, exc: Exception) -> EnvError:
        self.close()  # (async envs: their workers go now, not when the process ends)
        kind = getattr(exc, "type_name", type(exc).__name__)  # a worker's error names the env's exception
        return EnvError(
            f"The environment '{self.settings.env_id}' raised {kind} in {where}(): {exc}. "
            f"Fix: the bug is in the environment (run it alone with gymnasium to reproduce); training stopped "
            f"at {self.module.num_timesteps} env steps and the last checkpoint is intact."
        )

    # ---- resuming ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """:meth:`rank_state`; under DDP every rank's, gathered into the checkpoint (``{"ranks": [...]}``), so
        that each rank resumes its own envs and streams."""
        return self.module.gather_ranks(self.rank_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        found, mine = self.module.own_rank(state)
        if not found:
            # another number of processes: whose streams would each rank take? Fresh envs from each rank's seed.
            saved = len(state["ranks"]) if "ranks" in state else 1
            rank_zero_warn(f"The checkpoint was written by {saved} process(es) and this run has "
                           f"{self.module.trainer.world_size}: envs and RNG streams restart per process (the weights, "
                           "optimizer and counters resume).")
            if self.module.trainer.world_size > 1:
                self.module.decorrelate_ranks()
            return
        self.load_rank_state(mine)

    def rank_state(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly where this one stands (saved by Lightning with the
        checkpoint, at a batch boundary): every RNG stream, the envs themselves where they pickle (the
        sub-envs' states and seeds, the action-space sampler), the latest observations, the return and
        length of each episode in progress and the reward normalizer's running returns. Tensors and bytes
        only, so the checkpoint loads with ``torch.load(weights_only=True)``; the envs' bytes are signed with
        this user's key and unpickled on resume only when the signature holds (:mod:`lightning_pg.trust`)."""
        state: dict[str, Any] = {"rng": rng_state(), "envs": None, "obs": None, "discounted_return": None,
                                 "episode_return": None, "episode_length": None, "env_config": repr(self.settings)}
        if self.envs is not None and self.settings.vectorization == "async":
            if not self._warned_unpicklable:
                self._warned_unpicklable = True
                rank_zero_warn("Async envs live in their worker processes, so checkpoints do not hold their state: a "
                               "resumed run resets them with seeds drawn from the saved RNG (deterministic, but the "
                               "episodes open at the checkpoint are dropped).")
        elif self.envs is not None:
            try:
                state["envs"] = pickle.dumps(self.envs)
                state["envs_signature"] = sign(state["envs"])
            except Exception as exc:  # noqa: BLE001 - e.g. Box2D worlds: documented fallback below
                if not self._warned_unpicklable:
                    self._warned_unpicklable = True
                    rank_zero_warn(
                        f"The environment '{self.settings.env_id}' cannot be pickled ({type(exc).__name__}), "
                        "so checkpoints do not hold its state: a resumed run resets the envs with seeds drawn from "
                        "the saved RNG (deterministic, but the episodes open at the checkpoint are dropped)."
                    )
        if self.obs is not None:
            state["obs"] = torch.from_numpy(np.array(self.obs))
            state["episode_return"] = torch.from_numpy(self.episode_return.copy())
            state["episode_length"] = torch.from_numpy(self.episode_length.copy())
        if self.reward_scaler is not None and self.reward_scaler.discounted_return is not None:
            state["discounted_return"] = self.reward_scaler.discounted_return.cpu()
        return state

    def load_rank_state(self, state: dict[str, Any]) -> None:
        set_rng_state(state["rng"])
        if self._restore_envs(state) and self.reward_scaler is not None and state.get("discounted_return") is not None:
            self.reward_scaler.discounted_return = state["discounted_return"].to(self.module.device)

    def _restore_envs(self, state: dict[str, Any]) -> bool:
        """Put back the saved envs and their open episodes when they are this run's and signed by this user;
        otherwise leave them to be rebuilt (seeded from the restored RNG) and say what restarts."""
        fresh = ("building fresh envs seeded from the saved RNG: the episodes open at the checkpoint and the reward "
                 "normalizer's running returns restart; the weights, optimizer, counters, normalizer statistics "
                 "and replay buffer resume.")
        if state.get("env_config") != repr(self.settings):
            rank_zero_warn(f"The env settings (env_id, env_kwargs, num_envs, env_wrappers or vectorization) differ from the checkpoint's: {fresh}")
            return False
        if state.get("envs") is None:
            return False  # they did not pickle (e.g. Box2D): warned about when saving
        if not signed_by_this_user(state["envs"], state.get("envs_signature")):
            rank_zero_warn("This checkpoint's environment state is not signed by this user (it was written on "
                           "another machine or account, or altered), so it is not unpickled (it could run code): "
                           + fresh)
            return False
        self.close()
        self.envs = pickle.loads(state["envs"])  # bytes this user's key signed: see lightning_pg.trust
        self.obs = None if state["obs"] is None else state["obs"].numpy()
        if self.obs is not None:  # the open episodes go on: so do their counters
            self.episode_return = state["episode_return"].numpy().copy()
            self.episode_length = state["episode_length"].numpy().copy()
        return True

    def close(self) -> None:
        """Close the envs; a later batch starts from fresh ones (reset)."""
        if self.envs is not None:
            self.envs.close()
            self.envs = None
        self.obs = None


# Acting returns tensors (through the policy module) or numpy arrays (NumpyActor): batches are built from either.
def stack(items: list) -> Tensor | np.ndarray:
    return torch.stack(items) if isinstance(items[0], Tensor) else np.stack(items)


def cat(items: list) -> Tensor | np.ndarray:
    return torch.cat(items) if isinstance(items[0], Tensor) else np.concatenate(items)


def as_tensor(array: Tensor | np.ndarray) -> Tensor:
    return array if isinstance(array, Tensor) else torch.from_numpy(np.ascontiguousarray(array))
