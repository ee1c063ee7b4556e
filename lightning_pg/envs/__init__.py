"""Build gymnasium environments: registered ids or ``"package.module:ClassName"`` entry points (Env subclasses).

One autoreset mode everywhere: ``AutoresetMode.SAME_STEP``. A sub-environment that ends is reset inside the
same ``step`` call; the observation returned is the first of the new episode and the true last observation
is in ``info["final_obs"]``. So every transition a vector env returns is a real one (no dead step to mask as
in NEXT_STEP mode), and a truncated transition still has the final observation to bootstrap from. Episode
returns are counted by whoever steps the envs (``EnvIterable.step``, ``evaluate``), at a fraction of the
per-step cost of gymnasium's ``RecordEpisodeStatistics`` wrapper.
"""
from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space, iterate

from lightning_pg.errors import EnvError

__all__ = ["check_entry_point", "check_wrappers", "make_env", "make_vec_env", "check_spaces", "env_seed",
           "FlatObservation", "flatten_observations"]


def check_entry_point(env_id: Any, import_modules: bool = True, source: str = "the config") -> str | EnvSpec:
    """What ``gymnasium.make`` gets for ``env_id``: a registered id as is, or for ``"package.module:ClassName"``
    an unregistered EnvSpec of that ``gymnasium.Env`` subclass.

    Nothing else is accepted as an entry point: a config or checkpoint that names ``os:system`` would otherwise
    have it called. With ``import_modules=False`` (hyperparameters read from a checkpoint) the module must
    already be imported: a file never decides what this process imports.
    """
    if not isinstance(env_id, str) or ":" not in env_id or env_id in gym.registry:
        return env_id
    module_name, _, attr = env_id.partition(":")
    what = f"the environment entry point '{env_id}'"
    module = _import_named(module_name, what, source, import_modules,
                           "give the entry point as 'package.module:ClassName'")
    if f"{module_name}:{attr}" in gym.registry or attr in gym.registry:  # gymnasium's 'module:Env-v0'
        return attr if attr in gym.registry else f"{module_name}:{attr}"
    _check_subclass(getattr(module, attr, None), gym.Env, what, source,
                    "(a factory function or any other callable is refused: a file could name os:system). Fix: give "
                    "'package.module:EnvClass', or register the env with gymnasium.register and pass its id.")
    return EnvSpec(id=attr, entry_point=env_id)


def _import_named(module_name: str, what: str, source: str, import_modules: bool, fix: str) -> Any:
    """The module of a class that a config or checkpoint names (``what``): imported, or with
    ``import_modules=False`` already imported (a file never decides what this process imports)."""
    if module_name not in sys.modules and not import_modules:
        raise EnvError(
            f"{source[0].upper()}{source[1:]} names {what}, whose module is not imported; lightning_pg imports "
            f"nothing because a file says so. Fix: import the module that defines it first (`import {module_name}` "
            f"in Python; `--import {module_name}` for the play and export commands), then load the checkpoint."
        )
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvError(
            f"Cannot import module '{module_name}' for {what} in {source} ({exc}). Fix: correct the name, or make "
            f"the package importable (install it, or add its folder to PYTHONPATH); {fix}."
        ) from None


def _check_subclass(cls: Any, base: type, what: str, source: str, fix: str) -> type:
    """``cls`` is a ``base`` subclass (a wrapper or env is code: nothing else a file names is called)."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        kind = f"gymnasium.{base.__name__}"
        found = "nothing" if cls is None else f"the class {cls.__qualname__}" if isinstance(cls, type) \
            else f"a {type(cls).__name__}"
        raise EnvError(f"{what[0].upper()}{what[1:]} in {source} names {found}. It must be a {kind} subclass {fix}")
    return cls


def check_wrappers(env_wrappers: Any, import_modules: bool = True,
                   source: str = "the config") -> list[tuple[type, dict, bool]]:
    """``env_wrappers`` (a list of ``{class_path, init_args, training_only}``) as ``(class, kwargs, training_only)``.
    ``training_only: true`` wraps the training envs only (Atari's reward clipping and end of episode at a lost
    life: evaluation reports the game's own score).

    Each class must be a ``gymnasium.Wrapper`` subclass (a wrapper is code: as for env entry points, nothing
    else is called); with ``import_modules=False`` (a checkpoint's hyperparameters) its module must already be
    imported.
    """
    if env_wrappers is None:
        return []
    fix = ("Fix: give env_wrappers as a list of {class_path: package.module.WrapperClass, init_args: {...}}, e.g. "
           "[{class_path: gymnasium.wrappers.TimeLimit, init_args: {max_episode_steps: 100}}].")
    if not isinstance(env_wrappers, (list, tuple)):
        raise EnvError(f"env_wrappers in {source} is {env_wrappers!r}, not a list. {fix}")
    resolved = []
    for item in env_wrappers:
        path = item.get("class_path") if isinstance(item, dict) else None
        kwargs = item.get("init_args") or {} if isinstance(item, dict) else None
        training_only = item.get("training_only", False) if isinstance(item, dict) else None
        if not isinstance(path, str) or "." not in path or not isinstance(kwargs, dict) or not isinstance(
                training_only, bool) or set(item) - {"class_path", "init_args", "training_only"}:
            raise EnvError(f"The env wrapper {item!r} in {source} is not a {{class_path, init_args}} mapping. {fix}")
        module_name, _, attr = path.rpartition(".")
        what = f"the env wrapper '{path}'"
        module = _import_named(module_name, what, source, import_modules,
                               "give the class path as package.module.WrapperClass")
        cls = _check_subclass(getattr(module, attr, None), gym.Wrapper, what, source, "(a file names only "
                              f"classes of that kind to be called). {fix}")
        resolved.append((cls, kwargs, training_only))
    return resolved


class FlatObservation(gym.ObservationWrapper):
    """Discrete, MultiDiscrete, MultiBinary, Dict and Tuple observations as one float32 vector, as the
    networks take them: a Discrete is one-hot, a MultiDiscrete one one-hot per entry, the parts of a Dict
    (in its key order) or Tuple concatenated (``gymnasium.spaces.flatten``: Stable-Baselines3's layout, which
    flattens vectors and concatenates them). Images inside a Dict or Tuple keep their pixel values (0-255) in
    that vector, and the networks cut each one out for its own CNN (:class:`~lightning_pg.networks.MultiInputEncoder`).
    ``raw_space`` is the env's own space, which ``predict`` and the network builders take."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.raw_space = env.observation_space
        parts = space_parts(self.raw_space)
        odd = [f"{key or 'the observation'}: {part}" for key, part in parts if not isinstance(
            part, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))]
        if odd:
            raise EnvError(
                f"The observations of '{env.spec.id if env.spec else env}' hold a part no network here reads "
                f"({'; '.join(odd)}). Fix: turn it into a Box, Discrete, MultiDiscrete or MultiBinary with a wrapper "
                "(env_wrappers), or drop it (gymnasium.wrappers.FilterObservation)."
            )
        flat = spaces.flatten_space(self.raw_space)
        self.observation_space = spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32),
                                            flat.shape, np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return spaces.flatten(self.raw_space, observation).astype(np.float32, copy=False)


def space_parts(space: spaces.Space, prefix: str = "") -> list[tuple[str, spaces.Space]]:
    """The leaves of a Dict or Tuple space as ``(dotted key, space)``, in ``gymnasium.spaces.flatten``'s order."""
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        keys = space.spaces.keys() if isinstance(space, spaces.Dict) else range(len(space.spaces))
        return [part for key in keys for part in space_parts(space[key], f"{prefix}{key}.")]
    return [(prefix.rstrip("."), space)]


def needs_flattening(space: spaces.Space) -> bool:
    return isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict, spaces.Tuple))


def flatten_observations(space: spaces.Space, observation: Any) -> tuple[np.ndarray, bool]:
    """Raw observations of ``space`` (one, or a batch as a vector env returns them) as flat float32 rows
    ``[B, d]``, and whether it was one."""
    leaf_space, leaf = space, observation
    while isinstance(leaf_space, (spaces.Dict, spaces.Tuple)):  # the first part tells one from a batch
        key = next(iter(leaf_space.spaces)) if isinstance(leaf_space, spaces.Dict) else 0
        leaf_space, leaf = leaf_space[key], leaf[key]
    single = np.ndim(leaf) == len(leaf_space.shape)
    items = [observation] if single else iterate(batch_space(space, len(leaf)), observation)
    return np.stack([spaces.flatten(space, item) for item in items]).astype(np.float32, copy=False), single


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, env_wrappers: Any = None, training: bool = True,
             **extra: Any) -> gym.Env:
    """One environment: ``gymnasium.make``, then ``env_wrappers`` in order (``training_only`` ones for training
    envs only), then :class:`FlatObservation` where the observations are not an array. Errors become a
    one-paragraph :class:`EnvError` that names the fix."""
    spec = check_entry_point(env_id)
    wrappers = check_wrappers(env_wrappers)
    env = _make(env_id, spec, env_kwargs, **extra)
    for cls, kwargs, training_only in wrappers:
        if training_only and not training:
            continue
        try:
            env = cls(env, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a wrapper's own check of its arguments or of the env
            env.close()
            raise EnvError(
                f"The env wrapper {cls.__module__}.{cls.__qualname__} could not wrap '{env_id}' with "
                f"init_args={kwargs!r}: {type(exc).__name__}: {exc}. Fix: pass only arguments it accepts, with "
                "values that suit this env (and order env_wrappers so each gets the spaces it expects)."
            ) from None
    if needs_flattening(env.observation_space):
        env = FlatObservation(env)
    return env


def _make(env_id: str, spec: str | EnvSpec, env_kwargs: dict[str, Any] | None, **extra: Any) -> gym.Env:
    try:
        return gym.make(spec, **(env_kwargs or {}), **extra)
    except gym.error.Error as exc:
        raise EnvError(
            f"Unknown environment id '{env_id}': {exc} Fix: pass a registered gymnasium id "
            "(list them with `python -c \"import gymnasium; gymnasium.pprint_registry()\"`), or an entry "
            "point 'package.module:ClassName'; Box2D and MuJoCo envs need `pip install 'lightning_pg[envs]'`."
        ) from None
    except (ImportError, gym.error.DependencyNotInstalled) as exc:
        raise EnvError(
            f"The environment '{env_id}' needs a package that is not installed ({exc}). Fix: install it, "
            "e.g. `pip install 'lightning_pg[envs]'` for Box2D and MuJoCo."
        ) from None
    except TypeError as exc:
        raise EnvError(
            f"The environment '{env_id}' rejected env_kwargs={env_kwargs!r}: {exc}. Fix: pass only keyword "
            "arguments its constructor accepts (or gymnasium.make's, such as max_episode_steps)."
        ) from None


VECTORIZATIONS = ("sync", "async")


def make_vec_env(
    env_id: str, env_kwargs: dict[str, Any] | None, num_envs: int, seed: int | None = None, env_wrappers: Any = None,
    vectorization: str = "sync", training: bool = True,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies, SAME_STEP autoreset: stepped one after the other in this process (``"sync"``), or by
    worker processes in parallel, one per core, each stepping a group of them (``"async"``, :mod:`.workers`).

    With ``seed`` the sub-envs are seeded ``seed, seed + 1, ...`` and the action space sampler with ``seed``,
    so uniform random actions (replay warm-up) are reproducible too.
    """
    make = functools.partial(make_env, env_id, env_kwargs, env_wrappers, training)
    make().close()  # fail here, with our message, rather than inside a worker
    if vectorization == "async":
        from lightning_pg.envs.workers import WorkerVectorEnv

        envs = WorkerVectorEnv([make] * num_envs)
    else:  # functools.partial rather than a lambda: the vector env then pickles (checkpoints save env states)
        envs = SyncVectorEnv(
            [make] * num_envs,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    if seed is not None:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
    return envs


def env_seed(rank: int, num_envs: int) -> int:
    """Seed for this rank's envs, drawn from torch's global RNG (so ``seed_everything`` fixes it).

    Each rank offsets by ``rank * num_envs``: every sub-env of every rank gets its own stream.
    """
    import torch

    return int(torch.randint(0, 2**31 - 1 - 4096 * num_envs, ()).item()) + rank * num_envs


def check_spaces(
    algo: str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    supported_actions: Sequence[type[spaces.Space]],
    env_id: str,
    bounded_actions: bool = False,
) -> None:
    """Raise :class:`EnvError` when the env's spaces do not suit the algorithm."""
    if not isinstance(action_space, tuple(supported_actions)):
        names = " or ".join(cls.__name__ for cls in supported_actions)
        raise EnvError(
            f"{algo} cannot act in '{env_id}': its action space is {action_space}, and {algo} needs a {names} "
            f"action space. Fix: choose an algorithm that supports {type(action_space).__name__} actions "
            "(REINFORCE, A2C and PPO take Discrete, Box, MultiDiscrete and MultiBinary; DDPG, TD3 and SAC take Box), "
            "or wrap the env (env_wrappers)."
        )
    finite = isinstance(action_space, spaces.Box) and np.isfinite(action_space.low).all() and np.isfinite(
        action_space.high
    ).all()
    if bounded_actions and isinstance(action_space, spaces.Box) and not finite:
        raise EnvError(
            f"{algo} squashes actions into the action bounds, but '{env_id}' has unbounded actions "
            f"{action_space}. Fix: wrap the env with gymnasium.wrappers.ClipAction and finite bounds."
        )
    if not isinstance(observation_space, spaces.Box):
        raise EnvError(
            f"{algo} takes Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple observations, but '{env_id}' "
            f"has {observation_space}. Fix: turn them into one of those with a wrapper (env_wrappers)."
        )
