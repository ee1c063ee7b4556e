"""lightning_pg: policy-gradient and actor-critic reinforcement learning on PyTorch Lightning."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it. They load on first use (PEP 562), so importing the package
#: is cheap and `python -m lightning_pg` decides how torch and Lightning get imported (see __main__.py).
_EXPORTS = {
    **dict.fromkeys(["A2C", "A3C", "DDPG", "PPO", "REINFORCE", "SAC", "TD3", "TRPO", "OffPolicyModule", "OnPolicyModule", "RLModule"],
                    "lightning_pg.algorithms"),
    **dict.fromkeys(["ConfigError", "EnvError", "LightningPGError", "TrainingDiverged"], "lightning_pg.errors"),
    "evaluate": "lightning_pg.evaluation",
}
__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs
    from lightning_pg.algorithms import A2C, A3C, DDPG, PPO, REINFORCE, SAC, TD3, TRPO, OffPolicyModule, OnPolicyModule, RLModule
    from lightning_pg.errors import ConfigError, EnvError, LightningPGError, TrainingDiverged
    from lightning_pg.evaluation import evaluate


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a subpackage, e.g. lightning_pg.envs, as after an eager import
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
