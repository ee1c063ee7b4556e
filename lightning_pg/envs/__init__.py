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

from lightning_pg.errors import EnvError

__all__ = ["check_entry_point", "make_env", "make_vec_env", "check_spaces", "env_seed"]


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
    if module_name not in sys.modules and not import_modules:
        raise EnvError(
            f"{source[0].upper()}{source[1:]} names the environment entry point '{env_id}', whose module is not "
            "imported; lightning_pg imports nothing because a file says so. Fix: import the module that defines "
            f"the env first (`import {module_name}`), then load the checkpoint."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvError(
            f"Cannot import module '{module_name}' for the environment entry point '{env_id}' ({exc}). "
            "Fix: make the package importable (install it, or add its folder to PYTHONPATH) and give the "
            "entry point as 'package.module:ClassName'."
        ) from None
    if f"{module_name}:{attr}" in gym.registry or attr in gym.registry:  # gymnasium's 'module:Env-v0'
        return attr if attr in gym.registry else f"{module_name}:{attr}"
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
        found = "nothing" if cls is None else f"a {type(cls).__name__}, not a gymnasium.Env subclass"
        raise EnvError(
            f"The environment entry point '{env_id}' in {source} names {found}. An entry point must be a "
            "gymnasium.Env subclass (a factory function or any other callable is refused: a file could name "
            "os:system). Fix: give 'package.module:EnvClass', or register the env with gymnasium.register and "
            "pass its id."
        )
    return EnvSpec(id=attr, entry_point=env_id)


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """One environment; errors become a one-paragraph :class:`EnvError` that names the fix."""
    spec = check_entry_point(env_id)
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


def make_vec_env(
    env_id: str, env_kwargs: dict[str, Any] | None, num_envs: int, seed: int | None = None
) -> gym.vector.VectorEnv:
    """``num_envs`` copies in one process, SAME_STEP autoreset.

    With ``seed`` the sub-envs are seeded ``seed, seed + 1, ...`` and the action space sampler with ``seed``,
    so uniform random actions (replay warm-up) are reproducible too.
    """
    make_env(env_id, env_kwargs).close()  # fail here, with our message, rather than inside SyncVectorEnv
    # functools.partial rather than a lambda: the vector env then pickles (checkpoints save env states)
    envs = SyncVectorEnv(
        [functools.partial(make_env, env_id, env_kwargs) for _ in range(num_envs)],
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
            "(REINFORCE, A2C and PPO take Discrete and Box; DDPG, TD3 and SAC take Box), or wrap the env."
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
            f"{algo} needs Box (array) observations, but '{env_id}' has {observation_space}. Fix: wrap the env, "
            "e.g. gymnasium.wrappers.FlattenObservation for Dict/Tuple spaces, or a one-hot wrapper for Discrete."
        )
