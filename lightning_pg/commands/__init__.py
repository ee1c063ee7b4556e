"""The CLI's commands for trained agents, beside Lightning's fit/validate/test:
``python -m lightning_pg play|export|plot|tune ...`` (each with ``--help``).

Each command is a module here with a ``main(argv)``; the CLI runs it inside the same error handling as ``fit``
(bad input: one paragraph, exit status 2; ``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING, Any, NoReturn

from lightning_pg.errors import ConfigError

if TYPE_CHECKING:
    from lightning_pg.algorithms import RLModule

#: command name -> what it does (``--help`` of the CLI lists them)
COMMANDS = {
    "play": "play a checkpoint's agent: episode returns, a window or an mp4",
    "export": "the deterministic policy as ONNX or TorchScript, normalization and action clipping inside",
    "plot": "learning curves of runs (seeds of one config as a mean and a band) to a PNG",
    "tune": "an Optuna hyperparameter search of short fits, written out as a ready-to-run config",
}


#: the packages of the ``tools`` extra the commands import when they need them
TOOLS = ("imageio", "imageio_ffmpeg", "onnx", "onnxscript", "onnxruntime", "matplotlib", "optuna", "pygame")


def run(name: str, argv: list[str]) -> int | None:
    """Run command ``name`` with its arguments; its exit status (None: 0)."""
    try:
        return importlib.import_module(f"{__name__}.{name}").main(argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TOOLS:
            raise
        raise ConfigError(f"`python -m lightning_pg {name}` needs the package '{exc.name}', which is not installed. "
                          "Fix: `pip install 'lightning_pg[tools]'` (from a clone: `pip install -e \".[tools]\"`)."
                          ) from None


class CommandParser(argparse.ArgumentParser):
    """argparse for a command, whose mistakes are the CLI's one paragraph (exit status 2) like any other."""

    def __init__(self, command: str, description: str, **kwargs: Any):
        super().__init__(prog=f"python -m lightning_pg {command}", description=description, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}. Fix: correct the options (`{self.prog} --help` lists them).")


def add_imports_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import this module first (repeatable): where the checkpoint's model class, env entry point or "
             "wrappers are defined, when they are not lightning_pg's or gymnasium's. A checkpoint alone never "
             "imports code.")


def load_agent(ckpt_path: str, imports: list[str] = ()) -> "RLModule":
    """The model a checkpoint holds, config-free (hyperparameters, env id, wrappers and normalization statistics
    from the file), on the CPU in eval mode. ``imports`` are modules the user names to import first."""
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: it cannot be imported ({exc}). Fix: name a module importable "
                              "here (installed, or on PYTHONPATH).") from None
    from lightning_pg.algorithms import RLModule
    from lightning_pg.trust import read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    state = checkpoint.get("lightning_pg")
    if not isinstance(state, dict):
        raise ConfigError(
            f"{ckpt_path} was not written by lightning_pg (it has no 'lightning_pg' section). Fix: pass a "
            "last.ckpt or best.ckpt from a lightning_pg run's checkpoints/ folder.")
    checkpoint_class = RLModule
    if "_class_path" not in (checkpoint.get("hyper_parameters") or {}):
        # trained through the Python API: the class is the algorithm the file names, among those imported
        name = str(state.get("algorithm"))
        checkpoint_class = _imported_subclass(RLModule, name)
        if checkpoint_class is None:
            raise ConfigError(
                f"{ckpt_path} holds a {name} model, a class this process has not imported (a checkpoint never "
                f"imports code itself). Fix: pass --import with the module that defines {name}.")
    model = checkpoint_class.load_from_checkpoint(ckpt_path, map_location="cpu")
    return model.eval()


def _imported_subclass(base: type, name: str) -> type | None:
    """The imported subclass of ``base`` (at any depth) called ``name``, or None."""
    found, stack = None, list(base.__subclasses__())
    while stack and found is None:
        cls = stack.pop()
        found = cls if cls.__name__ == name else None
        stack.extend(cls.__subclasses__())
    return found
