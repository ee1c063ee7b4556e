"""``metrics.csv`` in the run folder: the training curves readable with no W&B tool at all.

The CLI adds :class:`MetricsCSV` to every ``fit`` beside the configured logger. It receives what every logger
receives (``time/env_steps``, ``train/episode_return``, ``eval/return_mean``, the losses, ...), one row per
logging call, one column per metric.

Not Lightning's ``CSVLogger``: it deletes an existing ``metrics.csv`` when it starts, which would erase a
resumed run's history, and warns about every non-empty folder (a run folder always is).
"""
from __future__ import annotations

import csv
import os
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

FILE_NAME = "metrics.csv"
STEP = "time/env_steps"
#: columns in this order first; other metrics follow in the order they are first logged
FIRST = [STEP, "train/episode_return", "train/episode_length", "eval/return_mean", "eval/return_std", "time/sps"]


class MetricsCSV(Logger):
    """Append each logged row to ``<folder>/metrics.csv``, flushed at once (a killed run keeps its rows).

    Args:
        folder: where ``metrics.csv`` goes (the CLI: the run folder).
        resume_at: the env step of the checkpoint a resumed run continues from: the file's rows up to it are
            kept, and from the first row past it on (what the stopped run logged after its checkpoint) dropped,
            so the file reads as one run, as the resumed weights do. None: a new file replaces any there.

    The file is first touched at the first row, after the run holds its folder (a run refused at start, a
    second one into a folder in use, leaves the file alone).
    """

    def __init__(self, folder: str, resume_at: int | None = None):
        super().__init__()
        self.folder = folder
        self.path = os.path.join(folder, FILE_NAME)
        self.resume_at = resume_at
        self.columns: list[str] | None = None  # None: the file is not started yet

    @property
    def name(self) -> str:
        return "metrics.csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def log_dir(self) -> str:
        return self.folder

    @property
    def save_dir(self) -> str:
        return self.folder

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # config.yaml keeps them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.columns is None:
            self._start()
        row = {k: _number(v) for k, v in metrics.items()}
        if step is not None and STEP not in row:
            row["step"] = step  # a logger call of Lightning's own (e.g. LearningRateMonitor): its step counter
        new = [k for k in row if k not in self.columns]
        if new:
            columns = self.columns + new
            self._rewrite([k for k in FIRST if k in columns] + [k for k in columns if k not in FIRST])
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)

    def _start(self) -> None:
        if self.resume_at is None or not os.path.isfile(self.path):
            self._write([], [])
            return
        with open(self.path, newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        past = [i for i, row in enumerate(rows) if row.get(STEP) and float(row[STEP]) > self.resume_at]
        self._write(columns, rows[: past[0]] if past else rows)

    def _rewrite(self, columns: list[str]) -> None:
        """A new metric is a new column: the header changes, so the file is written again (rare: early on)."""
        with open(self.path, newline="") as file:
            rows = list(csv.DictReader(file))
        self._write(columns, rows)

    def _write(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        os.makedirs(self.folder, exist_ok=True)
        partial = self.path + ".partial"
        with open(partial, "w", newline="") as file:  # whole, then renamed: a kill never leaves half a file
            if columns:
                writer = csv.DictWriter(file, columns)
                writer.writeheader()
                writer.writerows(rows)
        os.replace(partial, self.path)
        self.columns = columns


def _number(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # tensors and numpy scalars
