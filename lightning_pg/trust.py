"""What a checkpoint file may make this process do: load tensors and plain data, never run code.

- Files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists, dicts and tuples only.
- Hyperparameters name code (Lightning's ``_instantiator``/``_class_path``, the ``env_id`` entry point, the
  ``env_wrappers`` classes). From a checkpoint they are accepted only when they name what this process has
  already imported: an RLModule subclass, a ``gymnasium.Env`` subclass (or a registered gymnasium id), a
  ``gymnasium.Wrapper`` subclass. Nothing is imported or called
  because a file said so.
- The environments' state is saved as pickled bytes (a simulator's state is whatever its class holds), so it is
  signed: an HMAC-SHA256 keyed by a secret of this user, created on first use in
  ``~/.config/lightning_pg/checkpoint.key`` (mode 0600; ``LIGHTNING_PG_KEY_FILE`` names another file). Only
  bytes whose signature checks out are unpickled: checkpoints this user wrote resume exactly; any other
  (another machine or account, or an altered file) resumes its weights, optimizer, counters and replay
  buffer and rebuilds the envs from its saved seeds.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from lightning_pg.errors import ConfigError

KEY_FILE_VARIABLE = "LIGHTNING_PG_KEY_FILE"
#: the instantiators LightningCLI writes into a model's hyperparameters (Lightning's own allowlist)
CLI_INSTANTIATORS = ("pytorch_lightning.cli.instantiate_module", "lightning.pytorch.cli.instantiate_module")


def key_file() -> Path:
    if os.environ.get(KEY_FILE_VARIABLE):
        return Path(os.environ[KEY_FILE_VARIABLE])
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config_home) / "lightning_pg" / "checkpoint.key"


KEY_BYTES = 32


def _key(create: bool) -> bytes | None:
    """This user's key: 32 random bytes, hex in the key file. Anything else in the file (empty, cut short) is
    no key, so a damaged file can never make a guessable key; None when there is none (and ``create`` is off)."""
    path = key_file()
    try:
        key = bytes.fromhex(path.read_text().strip())
        return key if len(key) == KEY_BYTES else None
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, ValueError):
        return None
    try:  # written whole under a temporary name, then linked into place: a reader never sees half a key
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)  # fails if another process made the key first: then theirs is the key
        except FileExistsError:
            pass
        finally:
            os.remove(temp)
    except OSError:
        return None
    return _key(create=False)


def sign(data: bytes) -> str | None:
    """This user's signature of ``data`` (None when no key can be kept: the bytes then count as foreign)."""
    global _said_no_key
    key = _key(create=True)
    if key is None:
        if not _said_no_key:
            _said_no_key = True
            warnings.warn(f"No checkpoint key: {key_file()} is damaged or cannot be written, so checkpoints hold "
                          "their env state unsigned and a resume rebuilds the envs. Fix: delete that file (a new "
                          f"key is made) or set {KEY_FILE_VARIABLE} to a file you can write.", stacklevel=2)
        return None
    return hmac.new(key, data, hashlib.sha256).hexdigest()


_said_no_key = False


def signed_by_this_user(data: bytes, signature: Any) -> bool:
    key = _key(create=False)
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), signature)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = True) -> dict[str, Any]:
    """The checkpoint's contents, loaded as plain data (``mmap``: tensors memory-mapped, so a check reads
    little); one paragraph when the file is damaged or holds code."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK":  # torch.save's zip archive; anything else fails below with a misleading message
            raise ValueError("it is empty" if not head else "it is not a zip archive, as torch.save writes")
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ConfigError(f"The checkpoint {path} does not exist. Fix: pass an existing .ckpt file.") from None
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is one message
        detail = " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__
        if "weights_only" in detail.lower() or "unsupported global" in detail.lower():
            raise ConfigError(
                f"The checkpoint {path} holds Python objects other than tensors and plain data, which could run "
                f"code when loaded, so lightning_pg does not load it ({detail}). Fix: pass a checkpoint written "
                "by lightning_pg (its last.ckpt or best.ckpt)."
            ) from None
        raise ConfigError(
            f"The checkpoint {path} cannot be read: it is damaged, empty or not a checkpoint ({detail}). Fix: pass an intact .ckpt file (a run's checkpoints/last.ckpt or best.ckpt); a write "
            "that was cut short leaves the previous file in place."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(
            f"The checkpoint {path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint. Fix: pass a "
            "last.ckpt or best.ckpt from a lightning_pg run's checkpoints/ folder."
        )
    return checkpoint


def check_saved_hyperparameters(hparams: dict[str, Any], cls: type, path: Any) -> type:
    """The class to build from a file's hyperparameters; refuse those that name code this process has not
    imported itself. (The caller then builds it from the plain values, without Lightning's CLI instantiator,
    which would let jsonargparse import and build any ``class_path`` found inside them.)"""
    from lightning_pg.envs import check_entry_point, check_wrappers

    instantiator = hparams.get("_instantiator")
    if instantiator is not None and instantiator not in CLI_INSTANTIATORS:
        raise ConfigError(
            f"The checkpoint {path} asks to be built by {instantiator!r}, which is not LightningCLI's "
            "instantiator; lightning_pg runs no code named by a file. Fix: use a checkpoint written by lightning_pg."
        )
    class_path = hparams.get("_class_path")
    target = cls if class_path is None else _imported_subclass(class_path, cls)
    if target is None:
        raise ConfigError(
            f"The checkpoint {path} names the model class {class_path!r}, which is not an imported subclass of "
            f"{cls.__name__}; lightning_pg imports nothing because a file says so. Fix: import the module that "
            "defines it first (in Python; `--import MODULE` for the play and export commands), or load with that "
            "class's load_from_checkpoint."
        )
    check_entry_point(hparams.get("env_id"), import_modules=False, source=f"the checkpoint {path}")
    check_wrappers(hparams.get("env_wrappers"), import_modules=False, source=f"the checkpoint {path}")
    return target


def _imported_subclass(class_path: Any, cls: type) -> type | None:
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    found = getattr(sys.modules.get(module_name), name, None)  # (lightning_pg's lazy exports resolve here)
    return found if isinstance(found, type) and issubclass(found, cls) else None
