"""``python -m lightning_pg plot RUN_DIR... [--output curves.png] [--metric eval/return_mean]``: learning curves.

Each run folder's ``metrics.csv`` (every ``fit`` writes one, whatever the logger) gives the metric against
``time/env_steps``. Runs whose ``config.yaml`` is the same but for the seed and the run's own paths are seeds
of one config: they are drawn as one line, their mean, inside a band (min to max over the seeds by default, or
mean ± one standard deviation). Seeds evaluated at different env steps are interpolated linearly onto the union
of their steps, over the range every seed covers (no extrapolation past a seed's first or last point).

The drawing (:func:`draw_curves`) and the seed statistics (:func:`seed_band`) are used by
``benchmarks/report.py`` too.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lightning_pg.commands import CommandParser
from lightning_pg.errors import ConfigError
from lightning_pg.loggers import FILE_NAME, STEP

#: config keys that differ between seeds of one config without changing what is trained: the seed, and where
#: the run writes (or resumed from), how it reports progress
RUN_SPECIFIC = ("seed_everything", "ckpt_path", "trainer.default_root_dir", "trainer.logger",
                "trainer.enable_progress_bar", "checkpoint.dirpath")
BANDS = {"minmax": "min to max", "std": "mean ± sample std"}


@dataclass
class Curve:
    """One run's metric: ``values[i]`` at ``steps[i]`` env steps (increasing)."""
    steps: np.ndarray
    values: np.ndarray


@dataclass
class Band:
    """The seeds of one config on a common grid of env steps: their mean and a band (low to high)."""
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def seed_band(curves: Sequence[Curve], band: str = "minmax") -> Band:
    """Mean and band of several seeds' curves.

    The grid is the union of the seeds' env steps within the range all of them cover; each seed is
    interpolated linearly onto it (where the seeds were evaluated at the same steps, the numbers are theirs).
    ``band``: ``"minmax"`` (the lowest and highest seed at each step) or ``"std"`` (mean ± the sample
    standard deviation over the seeds, ``ddof=1``).
    """
    if not curves:
        raise ValueError("seed_band needs at least one curve")
    start = max(c.steps[0] for c in curves)
    stop = min(c.steps[-1] for c in curves)
    grid = np.unique(np.concatenate([c.steps for c in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    if not len(grid):
        raise ValueError("the curves share no range of env steps (one ends before another starts)")
    table = np.stack([np.interp(grid, c.steps, c.values) for c in curves])  # seeds x steps
    mean = table.mean(axis=0)
    if band == "std":
        std = table.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
        low, high = mean - std, mean + std
    else:
        low, high = table.min(axis=0), table.max(axis=0)
    return Band(grid, mean, low, high, len(curves))


def draw_curves(bands: dict[str, Band], output: str | os.PathLike, ylabel: str, title: str = "",
                band: str = "minmax", size: tuple[int, int] = (960, 600), dpi: int = 100) -> Path:
    """Draw each labelled band (mean line, shaded band) against env steps into a PNG of ``size`` pixels.

    A Figure with its own Agg canvas, not pyplot: no global figure registry, no backend switch for the caller.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, curve in bands.items():
        seeds = f"{curve.seeds} seed{'s' if curve.seeds != 1 else ''}"
        line, = axes.plot(curve.steps, curve.mean, label=f"{label} (mean of {seeds})")
        if curve.seeds > 1:
            axes.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("env steps")
    axes.set_ylabel(ylabel)
    axes.set_title(f"{title}{' — ' if title else ''}band: {BANDS[band]} over the seeds", fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()  # inside the fixed canvas: the file keeps the requested size
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    return output


# ---- reading runs ----------------------------------------------------------------------------------------
def run_folders(path: str) -> list[Path]:
    """``path`` itself when it is a run folder (it has metrics.csv or config.yaml), else the ``run_N`` folders
    in it (a CLI root such as ``runs/ppo_cartpole``), oldest first."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"RUN_DIR {path}: no such folder. Fix: pass a run folder (runs/ppo_cartpole/run_1) or "
                          "the root that holds run_N folders (runs/ppo_cartpole).")
    if (folder / FILE_NAME).is_file() or (folder / "config.yaml").is_file():
        return [folder]
    runs = [p for p in folder.glob("run_*") if p.is_dir() and p.name[4:].isdigit()]
    if not runs:
        raise ConfigError(f"RUN_DIR {path} is neither a run folder (it has no {FILE_NAME} nor config.yaml) nor "
                          "a root of run_N folders. Fix: pass the folder `fit` named in its last lines "
                          "('lightning_pg: run folder ...'), or its parent.")
    return sorted(runs, key=lambda p: int(p.name[4:]))


def read_curve(run: Path, metric: str) -> Curve:
    """``metric`` against ``time/env_steps`` from ``run/metrics.csv`` (rows without the metric skipped; a step
    logged twice keeps its last value)."""
    path = run / FILE_NAME
    if not path.is_file():
        wandb_runs = glob.glob(str(run / "wandb" / "offline-run-*"))
        hint = (f" It has a W&B offline run ({wandb_runs[0]}), whose history only W&B's service reads: upload it "
                f"(`wandb sync {wandb_runs[0]}`) and plot it there.") if wandb_runs else ""
        raise ConfigError(f"{run} has no {FILE_NAME}, which `plot` reads (every `python -m lightning_pg fit` "
                          f"writes one into its run folder).{hint} Fix: pass run folders made by the CLI's fit.")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    by_step: dict[float, float] = {}
    present: set[str] = set()
    for row in rows:
        present.update(k for k, v in row.items() if v not in ("", None))
        if row.get(metric) not in ("", None) and row.get(STEP) not in ("", None):
            by_step[float(row[STEP])] = float(row[metric])
    if not by_step:
        names = ", ".join(sorted(present - {STEP})) or "none"
        raise ConfigError(f"{path} has no values of {metric!r} against {STEP} (its metrics: {names}). Fix: pass "
                          "one of them with --metric (eval/return_mean needs --model.eval_every > 0).")
    steps = np.array(sorted(by_step))
    return Curve(steps, np.array([by_step[s] for s in steps]))


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    items: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.update(_flat(value, name + "."))
        else:
            items[name] = value
    return items


def run_config(run: Path) -> dict[str, object]:
    """The run's config.yaml flattened to dotted keys, less :data:`RUN_SPECIFIC`; empty when it has none."""
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    config = _flat(yaml.safe_load(path.read_text()) or {})
    return {k: v for k, v in config.items() if k not in RUN_SPECIFIC}


def group_runs(runs: Sequence[Path]) -> dict[str, list[Path]]:
    """Runs grouped by config (seeds of one config together), each group labelled by algorithm and env, plus
    the settings that tell groups of the same algorithm and env apart. A run without config.yaml is a group of
    its own, labelled by its folder."""
    configs = {run: run_config(run) for run in runs}
    groups: dict[str, list[Path]] = {}
    for run, config in configs.items():
        key = json.dumps(config, sort_keys=True, default=str) if config else str(run)
        groups.setdefault(key, []).append(run)

    def base(config: dict) -> str:
        algorithm = str(config.get("model.class_path", "")).rsplit(".", 1)[-1]
        return f"{algorithm} {config.get('model.init_args.env_id', '')}".strip()

    labels: dict[str, list[Path]] = {}
    for key, members in groups.items():
        config = configs[members[0]]
        if not config:
            labels[str(members[0])] = members
            continue
        rivals = [configs[m[0]] for k, m in groups.items() if k != key and configs[m[0]] and
                  base(configs[m[0]]) == base(config)]
        differing = sorted({k for other in rivals for k in set(config) | set(other)
                            if config.get(k) != other.get(k)})
        settings = ", ".join(f"{k.removeprefix('model.init_args.')}={config.get(k)}" for k in differing)
        labels[f"{base(config)} ({settings})" if settings else base(config)] = members
    return labels


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ConfigError(f"--size {text}: expected WIDTHxHEIGHT in pixels. Fix: e.g. --size 960x600.")
    return int(width), int(height)


def main(argv: list[str]) -> None:
    parser = CommandParser("plot", __doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders (run_N) or roots holding run_N folders (e.g. runs/ppo_cartpole)")
    parser.add_argument("--output", default="curves.png", help="the PNG to write (default: curves.png)")
    parser.add_argument("--metric", default="eval/return_mean",
                        help="a column of metrics.csv, against time/env_steps (default: eval/return_mean)")
    parser.add_argument("--band", choices=sorted(BANDS), default="minmax",
                        help="minmax: the lowest to the highest seed (default); std: mean ± one standard deviation")
    parser.add_argument("--size", default="960x600", help="the PNG's width x height in pixels (default 960x600)")
    args = parser.parse_args(argv)
    width, height = _size(args.size)
    if not args.output.lower().endswith(".png"):
        raise ConfigError(f"--output {args.output}: plot writes PNG files. Fix: end the name with .png.")
    runs = list(dict.fromkeys(run for path in args.run_dirs for run in run_folders(path)))
    curves = {run: read_curve(run, args.metric) for run in runs}
    bands = {}
    for label, members in group_runs(runs).items():
        try:
            bands[label] = seed_band([curves[run] for run in members], args.band)
        except ValueError as exc:
            raise ConfigError(f"The runs {', '.join(map(str, members))} have one config ({label}) but {exc}: a "
                              "run continued from another's checkpoint in a new folder? Fix: plot them "
                              "separately.") from None
    output = draw_curves(bands, args.output, args.metric, band=args.band, size=(width, height))
    for label, band in bands.items():
        print(f"{label}: {band.seeds} seed(s), {args.metric} {band.mean[-1]:.1f} "
              f"[{band.low[-1]:.1f}, {band.high[-1]:.1f}] at {band.steps[-1]:.0f} env steps")
    print(f"lightning_pg: plot {output.resolve()}")
