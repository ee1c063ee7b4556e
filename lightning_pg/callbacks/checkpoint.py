"""Checkpoints on the env-step clock, the best model by evaluation return, and stops that meet their deadline.

- ``last.ckpt`` every ``every_n_env_steps`` env steps, when the budget is reached, and when the run is
  stopped by Ctrl+C (SIGINT) or SIGTERM.
- ``best.ckpt``: the weights with the highest ``eval/return_mean`` so far (saved right after an evaluation).
- A signal does not interrupt an update half-way: it is noted, the current batch finishes, ``last.ckpt`` is
  written at that consistent point, and the fit stops. Schedulers (Slurm, Kubernetes, ``timeout``) follow
  SIGTERM with SIGKILL after a grace period, so that wait is bounded: when no batch boundary comes within
  ``stop_grace_s``, or on a second Ctrl+C, the run stops at once without saving and names the checkpoint that
  stands (exit status 128 + the signal's number).
- Files live in ``<default_root_dir>/checkpoints/`` unless ``dirpath`` says otherwise, so that
  ``--ckpt_path last`` finds them whatever logger is used. One run writes there at a time (a lock on
  ``checkpoints.lock`` beside the folder, which the OS releases when the process ends, however it ends).
- Each file is written beside its target as ``<name>.partial``, flushed to disk and renamed over the old one
  (:class:`RunFolderCheckpointIO`): a kill at any moment leaves the previous complete file or the new one,
  and a failed write (a full disk) removes its partial file and stops the run in one paragraph.
- A run that fails (an exception, a non-finite loss) saves nothing: the last good checkpoint stays.
"""
from __future__ import annotations

import _thread
import contextlib
import errno
import glob
import os
import signal
import socket
import sys
import threading
import time
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_warn

from lightning_pg.errors import ConfigError, LightningPGError, StopRequested
from lightning_pg.schedules import crossed
from lightning_pg.trust import read_checkpoint

#: after the grace period the main thread is interrupted; if it has not left this many seconds later (stuck
#: in native code), the process exits from the watchdog thread
STOP_BACKSTOP_S = 3.0
#: checkpoint folders this process holds the lock of: realpath -> open file descriptor
_HELD_FOLDERS: dict[str, int] = {}


class CheckpointWriteError(LightningPGError):
    """A checkpoint could not be written (full disk, read-only folder); the previous file is intact."""


#: set while a checkpoint file is being written: the stop watchdog never cuts a write short
WRITING = threading.Event()


class RunFolderCheckpointIO(TorchCheckpointIO):
    """Writes with ``torch.save`` to ``<path>.partial`` beside the target, fsyncs it and renames it over the
    target; reads with :func:`~lightning_pg.trust.read_checkpoint` (plain data only, whatever the path or
    torch's defaults).

    Lightning's own writer stages each file in the system temp folder, so a full ``/tmp`` stopped every save
    even with room in the run folder, and the final move is not atomic across filesystems.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = os.fspath(path)
        folder = os.path.dirname(path) or "."
        partial = f"{path}.partial"
        WRITING.set()
        try:
            os.makedirs(folder, exist_ok=True)
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
            _fsync_folder(folder)  # the rename itself survives a power cut
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            cause = _os_error(exc)
            if cause is None:
                raise
            steps = (checkpoint.get("lightning_pg") or {}).get("num_timesteps", "?")
            reason = errno.errorcode.get(cause.errno or 0, type(cause).__name__)
            raise CheckpointWriteError(
                f"Could not write the checkpoint {path}: {cause.strerror or cause} ({reason}). Nothing was lost: "
                f"the previous {os.path.basename(path)} is intact (the partial file was removed), and the run "
                f"stopped at {steps} env steps. Fix: free space on that disk or make the folder writable, or set "
                "--checkpoint.dirpath to a folder with room; then resume with --ckpt_path last."
            ) from None
        finally:
            WRITING.clear()

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location=map_location or "cpu", mmap=False)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch's zip writer reports a failed write as a RuntimeError raised
    while handling it), or None."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError, AttributeError):  # (not every OS opens folders)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RLCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_env_steps`` env steps and on Ctrl+C/SIGTERM; ``best.ckpt`` by eval return.

    Args:
        every_n_env_steps: env steps between two writes of ``last.ckpt`` (>= 1).
        dirpath: folder of the checkpoints (default ``<default_root_dir>/checkpoints``).
        monitor: the best-model checkpoint, with ``mode``, ``filename`` and ``save_top_k``, as in ``ModelCheckpoint``.
        stop_grace_s: seconds a Ctrl+C or SIGTERM waits for the batch boundary where it saves (> 0); past them
            the run stops without saving. Keep it below your scheduler's grace period (Slurm's ``KillWait`` and
            Kubernetes' ``terminationGracePeriodSeconds`` are 30 s by default).
    """

    def __init__(
        self,
        every_n_env_steps: int = 10_000,
        dirpath: str | None = None,
        monitor: str | None = "eval/return_mean",
        mode: str = "max",
        filename: str = "best",
        save_top_k: int = 1,
        verbose: bool = False,
        stop_grace_s: float = 20.0,
    ):
        for name, value, ok, expected in (
            ("every_n_env_steps", every_n_env_steps, isinstance(every_n_env_steps, int) and every_n_env_steps >= 1,
             "an integer >= 1 (env steps between two saves of last.ckpt)"),
            ("stop_grace_s", stop_grace_s, isinstance(stop_grace_s, (int, float)) and stop_grace_s > 0,
             "a number of seconds > 0"),
        ):
            if not ok:
                raise ConfigError(f"Invalid checkpoint setting {name}={value!r}: it must be {expected}. Fix: set "
                                  f"--checkpoint.{name} (or checkpoint: {name}: in your config).")
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=save_top_k,
            save_last=True, verbose=verbose, auto_insert_metric_name=False, enable_version_counter=False,
        )
        self.every_n_env_steps, self.stop_grace_s = every_n_env_steps, float(stop_grace_s)
        self.stop_signal: int | None = None
        self._saved_at = -1
        self._standing: tuple[str, int] | None = None  # the last.ckpt that holds, and its env steps
        self._handlers: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None
        self._finished = self._stop_saved = self._deadline_passed = False

    # ---- where the files go -----------------------------------------------------------------------------
    def _resolve_dirpath(self, trainer: pl.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve_dirpath(trainer)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # (a user's own CheckpointIO stays)
            trainer.strategy.checkpoint_io = RunFolderCheckpointIO()
        if stage == "fit":  # rank 0 holds the folder; every rank hears whether it could
            refused = None
            if trainer.is_global_zero:
                try:
                    self.hold_folder(trainer)
                except ConfigError as exc:
                    refused = str(exc)
            if trainer.world_size > 1:
                refused = trainer.strategy.broadcast(refused, src=0)
            if refused:
                raise ConfigError(refused)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        self._resolve_dirpath(trainer)  # `--ckpt_path last` is resolved before setup()
        return super()._find_last_checkpoints(trainer)

    def hold_folder(self, trainer: pl.Trainer) -> None:
        """Take the checkpoint folder's lock, or raise a one-paragraph :class:`ConfigError` naming its holder;
        then remove the ``.partial`` files a killed run may have left.

        ``flock`` on ``<folder>.lock`` (``checkpoints.lock`` in the run folder; ``.lock`` inside the folder when
        its parent cannot be written): the OS releases it when the process ends, a crash and SIGKILL included,
        so a stale file never blocks a new run. Where a filesystem cannot lock (some NFS or Lustre mounts) or
        on Windows, the run goes on without a lock and says so.
        """
        self._resolve_dirpath(trainer)
        folder = os.path.realpath(self.dirpath)
        if folder in _HELD_FOLDERS:
            return
        try:
            import fcntl
        except ImportError:
            return
        try:
            os.makedirs(folder, exist_ok=True)
            try:
                fd = os.open(f"{folder}.lock", os.O_RDWR | os.O_CREAT, 0o644)  # beside: the folder holds checkpoints
            except OSError:
                fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"The checkpoint folder {folder} cannot be written ({exc.strerror or exc}): the run could never "
                "save. Fix: make it writable, or pass a folder you can write to as --trainer.default_root_dir "
                "(or --checkpoint.dirpath)."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                rank_zero_warn(f"Cannot lock {folder} ({exc.strerror}): this run does not guard its folder "
                               "against a second run.")
                return
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"Another lightning_pg run ({holder}) is writing to {folder}: two runs in one folder would take "
                "over each other's last.ckpt and best.ckpt. Fix: wait for that run to finish (or stop it), or "
                "give this one its own --trainer.default_root_dir (or --checkpoint.dirpath)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        _HELD_FOLDERS[folder] = fd
        for partial in glob.glob(os.path.join(glob.escape(folder), "*.partial")):  # from a run killed mid-write
            with contextlib.suppress(OSError):
                os.remove(partial)

    def _release_folder(self) -> None:
        fd = _HELD_FOLDERS.pop(os.path.realpath(self.dirpath), None) if self.dirpath else None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    # ---- when to save -----------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = pl_module.num_timesteps
        self._seen_eval = pl_module.evaluated_at
        self.stop_signal, self._finished, self._stop_saved, self._deadline_passed = None, False, False, False
        self._standing = None
        last = os.path.join(self.dirpath, "last.ckpt")
        with contextlib.suppress(ConfigError, KeyError, TypeError):
            self._standing = (last, int(read_checkpoint(last)["lightning_pg"]["num_timesteps"]))
        if threading.current_thread() is threading.main_thread():
            self._handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        steps = pl_module.num_timesteps
        evaluated = pl_module.evaluated_at != self._seen_eval and self.save_top_k and self.monitor is not None
        due = crossed(self._saved_at, steps, self.every_n_env_steps) or pl_module.budget_reached
        if trainer.world_size > 1:  # all ranks stop at the same batch: one saving alone would wait in a barrier
            if trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False):
                self.stop_signal = self.stop_signal or signal.SIGTERM
        if not (evaluated or due or self.stop_signal is not None):
            return  # the common case, kept cheap: this runs after every batch
        candidates = self._monitor_candidates(trainer)
        if evaluated and self.monitor in candidates:
            self._seen_eval = pl_module.evaluated_at
            self._save_topk_checkpoint(trainer, candidates)
        if due or self.stop_signal is not None:
            self._save_last_checkpoint(trainer, candidates)
            self._saved_at = steps
        if self.stop_signal is not None:
            self._stop_saved = True  # before cancelling: a watchdog firing now must not report "without saving"
            if self._watchdog is not None:
                self._watchdog.cancel()
            pl_module.stop_signal = self.stop_signal
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(
                    f"\nStopped by {signal.Signals(self.stop_signal).name} at {steps} env steps; saved "
                    f"{self.last_model_path}. Resume with --ckpt_path last.", file=sys.stderr, flush=True,
                )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # epochs mean nothing here: one fit is one pass over the env-step budget

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._saved_at != pl_module.num_timesteps:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._saved_at = pl_module.num_timesteps
        self._end()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._end()  # and save nothing: the weights may be broken

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._end()

    def _end(self) -> None:
        self._finished = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._restore_signals()
        self._release_folder()

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Save through the strategy (whose checkpoint IO writes atomically, see :class:`RunFolderCheckpointIO`)."""
        trainer.save_checkpoint(filepath, self.save_weights_only)
        if os.path.basename(filepath) == "last.ckpt":
            self._standing = (filepath, trainer.lightning_module.num_timesteps)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    # ---- signals ----------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:  # asked again, or the grace period ran out (see _watch)
            self._restore_signals()
            why = self._too_late() if self._deadline_passed else f"{signal.Signals(signum).name} again"
            raise StopRequested(self.stop_signal, self._stopped_without_saving(why))
        self.stop_signal = signum
        self._watchdog = threading.Timer(self.stop_grace_s, self._watch, args=(signum,))
        self._watchdog.daemon = True
        self._watchdog.start()
        print(f"\n{signal.Signals(signum).name} received: saving last.ckpt at the end of this batch (within "
              f"{self.stop_grace_s:g} s; press Ctrl+C again to stop at once without saving).", file=sys.stderr,
              flush=True)

    def _watch(self, signum: int) -> None:
        """The grace period is over (a thread of its own): interrupt the main thread, which then leaves
        without saving; exit from here if it has not left a few seconds later (stuck in native code)."""
        if self._finished or self._stop_saved:
            return
        self._deadline_passed = True
        if not WRITING.is_set():  # a file being written is finished first, never cut short
            _thread.interrupt_main(signum)  # runs _on_signal in the main thread, which raises StopRequested
        time.sleep(STOP_BACKSTOP_S)
        while WRITING.is_set():
            time.sleep(0.05)
        if not (self._finished or self._stop_saved):
            print(f"\nlightning_pg: {self._stopped_without_saving(self._too_late())}",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)

    def _too_late(self) -> str:
        return f"no batch boundary came within stop_grace_s={self.stop_grace_s:g} s"

    def _stopped_without_saving(self, why: str) -> str:
        standing = (f"{self._standing[0]} (at {self._standing[1]} env steps); resume with --ckpt_path last"
                    if self._standing else "none: this run had not saved yet")
        return f"Stopped at once ({why}), without saving. The last checkpoint that stands: {standing}."

    def _restore_signals(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "every_n_env_steps": self.every_n_env_steps}
