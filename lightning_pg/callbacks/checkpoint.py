"""Checkpoints on the env-step clock, the best model by evaluation return, and a safe Ctrl+C.

- ``last.ckpt`` every ``every_n_env_steps`` env steps, when the budget is reached, and when the run is
  stopped by Ctrl+C (SIGINT) or SIGTERM.
- ``best.ckpt``: the weights with the highest ``eval/return_mean`` so far (saved right after an evaluation).
- A signal does not interrupt an update half-way: it is noted, the current batch finishes, ``last.ckpt`` is
  written at that consistent point, and the fit stops. A second Ctrl+C aborts at once (without saving).
- Files live in ``<default_root_dir>/checkpoints/`` unless ``dirpath`` says otherwise, so that
  ``--ckpt_path last`` finds them whatever logger is used. Each file is written under a temporary name,
  flushed, and renamed over the old one, so a kill at any moment never leaves a truncated ``last.ckpt``.
- A run that fails (an exception, a non-finite loss) saves nothing: the last good checkpoint stays.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_pg.schedules import crossed


class RLCheckpoint(ModelCheckpoint):
    """Args:
    every_n_env_steps: env steps between two writes of ``last.ckpt`` (>= 1).
    dirpath: folder of the checkpoints (default ``<default_root_dir>/checkpoints``).
    monitor, mode, filename, save_top_k: the best-model checkpoint, as in ``ModelCheckpoint``.
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
    ):
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=save_top_k,
            save_last=True, verbose=verbose, auto_insert_metric_name=False, enable_version_counter=False,
        )
        self.every_n_env_steps = every_n_env_steps
        self.stop_signal: int | None = None
        self._saved_at = -1
        self._handlers: dict[int, Any] = {}

    # ---- where the files go -----------------------------------------------------------------------------
    def _resolve_dirpath(self, trainer: pl.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve_dirpath(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        self._resolve_dirpath(trainer)  # `--ckpt_path last` is resolved before setup()
        return super()._find_last_checkpoints(trainer)

    # ---- when to save -----------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = pl_module.num_timesteps
        self._seen_eval = pl_module.evaluated_at
        self.stop_signal = None
        if threading.current_thread() is threading.main_thread():
            self._handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        steps = pl_module.num_timesteps
        evaluated = pl_module.evaluated_at != self._seen_eval and self.save_top_k and self.monitor is not None
        due = crossed(self._saved_at, steps, self.every_n_env_steps) or pl_module.budget_reached
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
        self._restore_signals()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_signals()  # and save nothing: the weights may be broken

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_signals()

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Write to a temporary file in the same folder, flush it to disk, then rename it over the target.

        A rename within one folder is atomic, so a SIGKILL (or a power cut) at any moment leaves either the
        previous complete file or the new complete file, never a torn one. (Lightning's own transaction
        writes through the system temp folder, which is not atomic when that is another filesystem.)
        """
        partial = f"{filepath}.partial"
        trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, filepath)
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    # ---- signals ----------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:  # asked twice: stop now
            self._restore_signals()
            raise KeyboardInterrupt
        self.stop_signal = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this batch, then saving last.ckpt "
              "(press Ctrl+C again to abort without saving).", file=sys.stderr, flush=True)

    def _restore_signals(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "every_n_env_steps": self.every_n_env_steps}
