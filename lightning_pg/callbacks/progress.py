"""A progress bar in env steps toward ``total_timesteps``, showing the latest episode and eval returns."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class EnvStepProgressBar(TQDMProgressBar):
    def _start(self, pl_module: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=pl_module.hparams.total_timesteps)
        bar.n = bar.initial = pl_module.num_timesteps
        bar.unit = "step"
        bar.set_description(type(pl_module).__name__)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._start(pl_module)  # a resumed run skips on_train_epoch_start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._start(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        postfix = {}
        if pl_module.last_episode_return is not None:
            postfix["return"] = f"{pl_module.last_episode_return:.1f}"
        if pl_module.last_eval is not None:
            postfix["eval"] = f"{pl_module.last_eval[0]:.1f}"
        bar.set_postfix(postfix, refresh=False)
        bar.total = max(bar.total or 0, pl_module.num_timesteps)  # the last batch may overshoot the budget
        bar.update(pl_module.num_timesteps - bar.n)  # tqdm redraws at most every `mininterval` seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._leave:
            self.train_progress_bar.close()
