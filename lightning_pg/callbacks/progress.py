"""A progress bar in env steps toward ``total_timesteps``, showing the latest episode and eval returns.

When stdout is not a terminal (a log file, a pipe, a cluster job's output), the bar's carriage-return frames
would pile up as hundreds of updates: a plain line every ``plain_every_s`` seconds and one at the end replace it.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class EnvStepProgressBar(TQDMProgressBar):
    def __init__(self, plain_every_s: float = 30.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.plain = not sys.stdout.isatty() and "ipykernel" not in sys.modules  # (notebooks draw the bar)
        self.plain_every_s = plain_every_s
        self._printed = (0, 0.0)  # env steps and time of the last plain line

    @property
    def is_enabled(self) -> bool:
        return super().is_enabled and not self.plain  # (the plain lines are written by the hooks below)

    def _start(self, pl_module: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=pl_module.hparams.total_timesteps)
        bar.n = bar.initial = pl_module.num_timesteps
        bar.unit = "step"
        bar.set_description(type(pl_module).__name__)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._printed = (pl_module.num_timesteps, time.monotonic())
        self._start(pl_module)  # a resumed run skips on_train_epoch_start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._start(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        postfix = {}
        if pl_module.last_episode_return is not None:
            postfix["return"] = f"{pl_module.last_episode_return:.1f}"
        if pl_module.last_eval is not None:
            postfix["eval"] = f"{pl_module.last_eval[0]:.1f}"
        if self.plain:
            self._plain_line(trainer, pl_module, postfix)
            return
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        bar.set_postfix(postfix, refresh=False)
        bar.total = max(bar.total or 0, pl_module.num_timesteps)  # the last batch may overshoot the budget
        bar.update(pl_module.num_timesteps - bar.n)  # tqdm redraws at most every `mininterval` seconds

    def _plain_line(self, trainer: pl.Trainer, pl_module: Any, postfix: dict[str, str]) -> None:
        steps, now = pl_module.num_timesteps, time.monotonic()
        (before, then), total = self._printed, pl_module.hparams.total_timesteps
        if not trainer.is_global_zero or (now - then < self.plain_every_s and not pl_module.budget_reached
                                          and not trainer.should_stop):
            return
        self._printed = (steps, now)
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        print(f"{type(pl_module).__name__}: {steps:,}/{total:,} env steps ({100 * steps / total:.0f}%), "
              f"{(steps - before) / max(now - then, 1e-9):.0f} env steps/s{extra}", flush=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._leave and self.train_progress_bar is not None:
            self.train_progress_bar.close()
