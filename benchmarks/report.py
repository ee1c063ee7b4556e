"""lightning_pg against Stable-Baselines3: learning curves, final returns beside the RL Zoo's, and speed.

    pip install -e ".[bench,tools]"                    # SB3, sb3-contrib, matplotlib
    python benchmarks/report.py --quick                # under 15 minutes on 2 cores: docs/benchmarks/
    python benchmarks/report.py --out /tmp/report      # the configs' budgets, 3 seeds: a few hours
    python benchmarks/report.py --cases ppo_cartpole --seeds 5

For each case (a config in configs/) and seed, both libraries train as whole processes, one at a time (ours,
then SB3), with the same hyperparameters, seed and env-step budget: SB3's settings are translated from the
model lightning_pg builds from the config (``vs_sb3.py``'s mapping). Neither logs anywhere nor shows progress
(ours still writes its metrics.csv); each evaluates itself every ``snapshot_every`` env steps as it would for a
user (ours ``eval_every``, SB3 an ``EvalCallback``) and keeps its weights at that moment. Afterwards ONE loop
(``vs_sb3.evaluate_predict``: deterministic actions, one fresh env per episode seeded 0, 1, 2, ...) evaluates
every kept snapshot and the final model of both sides, so curves and final returns share start states.

It writes into ``--out``: ``<case>.png`` (return against env steps, ours against SB3: the mean over seeds and
the min-max band, drawn by ``lightning_pg.commands.plot``), ``report.md`` (the table of final returns, mean ±
sample std over seeds, beside the RL Zoo's published figure for the algorithm and env, and the speed ratios
ours / SB3 of whole-process wall time and of the training call alone) and ``results.json`` (every number).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vs_sb3 beside this file, when run as a script
import vs_sb3  # noqa: E402

REPO = vs_sb3.REPO

#: case -> (budget, snapshot_every) in env steps for the full report (None: the config's total_timesteps and
#: eval_every), and for --quick (None: not in the quick report). Quick budgets show the start of each curve.
CASES = {
    "ppo_cartpole": ((None, None), (32_000, 8_000)),
    "a2c_cartpole": ((None, None), (32_000, 8_000)),
    "ppo_pendulum": ((None, None), (32_768, 8_192)),
    "sac_pendulum": ((None, None), (5_000, 1_000)),
    "td3_pendulum": ((None, None), None),  # (its first 10k steps are random warm-up: a quick budget shows nothing)
    "ddpg_pendulum": ((None, None), None),
    "ppo_lunarlander": ((None, None), (65_536, 16_384)),
}

#: The RL Zoo's benchmark.md (DLR-RM/rl-baselines3-zoo at commit 0088472b8cb622732bdbc4aa3d0d0abde86c67ed):
#: one trained agent per row, mean and std of the return over its evaluation episodes (deterministic
#: policy), trained for n_timesteps. case -> (algo, env_id, mean_reward, std_reward, n_timesteps).
RL_ZOO = {
    "ppo_cartpole": ("ppo", "CartPole-v1", 500.000, 0.000, "100k"),
    "a2c_cartpole": ("a2c", "CartPole-v1", 500.000, 0.000, "500k"),
    "ppo_pendulum": ("ppo", "Pendulum-v1", -172.225, 104.159, "100k"),
    "sac_pendulum": ("sac", "Pendulum-v1", -156.995, 88.714, "20k"),
    "td3_pendulum": ("td3", "Pendulum-v1", -151.855, 90.227, "20k"),
    "ddpg_pendulum": ("ddpg", "Pendulum-v1", -152.099, 94.282, "20k"),
    "ppo_lunarlander": ("ppo", "LunarLander-v2", 242.119, 31.823, "1M"),
}
RL_ZOO_SOURCE = ("https://github.com/DLR-RM/rl-baselines3-zoo/blob/0088472b8cb622732bdbc4aa3d0d0abde86c67ed/"
                 "benchmark.md")


class EvalSnapshots(pl.Callback):
    """Our side's snapshots: after each of lightning_pg's evaluations, a checkpoint of the weights then,
    ``<run folder>/snapshots/snap_<env steps>.ckpt`` (the CLI adds it with ``--trainer.callbacks+=``)."""

    def __init__(self):
        self.seen = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, *args) -> None:
        if pl_module.evaluated_at >= 0 and pl_module.evaluated_at != self.seen:
            self.seen = pl_module.evaluated_at
            folder = os.path.join(trainer.default_root_dir, "snapshots")
            trainer.save_checkpoint(os.path.join(folder, f"snap_{pl_module.num_timesteps}.ckpt"))


def _by_steps(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: int(re.search(r"snap_(\d+)", p).group(1)))


def run_seed(case: str, budget: int, snapshot_every: int, seed: int, workdir: str, env: dict,
             episodes: int) -> dict:
    """Train both sides for one seed; their times, curve (env steps, return) and final return."""
    config = f"configs/{case}.yaml"
    root = tempfile.mkdtemp(prefix=f"{case}_{seed}_ours_", dir=workdir)
    ours = vs_sb3.ours_command(config, budget, seed, root, ours_args=[
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--model.eval_every={snapshot_every}",
        "--trainer.callbacks+=benchmarks.report.EvalSnapshots"])
    run = os.path.join(root, "run_1")
    out = os.path.join(tempfile.mkdtemp(prefix=f"{case}_{seed}_sb3_", dir=workdir), "model")
    sb3 = vs_sb3.sb3_command(config, budget, seed, out, snapshot_every=snapshot_every)
    sides = {"ours": (ours, lambda: _by_steps(glob.glob(f"{run}/snapshots/snap_*.ckpt")) +
                      [f"{run}/checkpoints/last.ckpt"]),
             "sb3": (sb3, lambda: _by_steps(glob.glob(f"{os.path.dirname(out)}/snapshots/snap_*_steps.zip")) +
                     [out + ".zip"])}
    result = {}
    for kind, (cmd, saved) in sides.items():
        wall, fit = vs_sb3.train(kind, cmd, env)
        evaluated = vs_sb3.evaluate_saved(kind, config, saved(), env, episodes)
        curve = dict(evaluated)  # a snapshot at the final step is the final model: one point
        result[kind] = {"wall": wall, "fit": fit, "final": evaluated[-1][1], "final_steps": evaluated[-1][0],
                        "curve": sorted(curve.items())}
    return result


HEADER = ("| config | env steps | seeds | lightning_pg final return | SB3 final return | RL Zoo (env, budget) | "
          "wall time ours / SB3 | fit time ours / SB3 | wall s, ours / SB3 |\n|---|---|---|---|---|---|---|---|---|")


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def write_report(results: dict, out: Path, args: argparse.Namespace, minutes: float) -> Path:
    from lightning_pg.commands.plot import Curve, draw_curves, seed_band

    rows, figures = [], []
    for case, runs in results.items():
        algo, env_id = RL_ZOO[case][0].upper(), runs["env_id"]
        seeds = runs["seeds"]
        bands = {name: seed_band([Curve(np.array([s for s, _ in r[kind]["curve"]], dtype=float),
                                        np.array([v for _, v in r[kind]["curve"]])) for r in seeds])
                 for name, kind in (("lightning_pg", "ours"), ("Stable-Baselines3", "sb3"))}
        draw_curves(bands, out / f"{case}.png", f"return ({args.episodes} deterministic episodes)",
                    title=f"{algo} {env_id}", size=(720, 450), dpi=90)
        figures.append(case)
        zoo = RL_ZOO[case]
        ratio = {t: statistics.median(r["ours"][t] / r["sb3"][t] for r in seeds) for t in ("wall", "fit")}
        finals = {kind: _mean_std([r[kind]["final"] for r in seeds]) for kind in ("ours", "sb3")}
        walls = {kind: statistics.mean(r[kind]["wall"] for r in seeds) for kind in ("ours", "sb3")}
        rows.append(f"| `{case}` | {runs['budget']:,} | {len(seeds)} | {finals['ours']} | {finals['sb3']} | "
                    f"{zoo[2]:.1f} ± {zoo[3]:.1f} ({zoo[1]}, {zoo[4]}) | **{ratio['wall']:.2f}** | "
                    f"{ratio['fit']:.2f} | {walls['ours']:.1f} / {walls['sb3']:.1f} |")
    command = "python benchmarks/report.py" + (" --quick" if args.quick else "") + (
        f" --cases {' '.join(args.cases)}" if args.cases else "")
    text = f"""# Benchmark report: lightning_pg against Stable-Baselines3

Written by `{command}` in {minutes:.1f} minutes on {platform.machine()} with {os.cpu_count()} cores
{"(the quick report: short budgets, 2 seeds, so the curves show the start of learning, not its end)"
 if args.quick else "(the configs' own budgets)"}. Both sides train one after the other, one torch thread
each, with the same hyperparameters, seeds and env-step budgets; SB3's settings are translated from the
model lightning_pg builds from the config (`benchmarks/vs_sb3.py`). One evaluation loop scores both: the
mean return of {args.episodes} deterministic episodes, one fresh env per episode seeded 0, 1, 2, ...
(the same start states for both), for the weights each side kept at its evaluations and at the end.

{HEADER}
""" + "\n".join(rows) + f"""

- Final returns: mean ± sample standard deviation over the seeds, of each seed's mean over the episodes.
- RL Zoo: the figure its [benchmark.md]({RL_ZOO_SOURCE}) publishes for the algorithm and env: one agent
  trained for the budget in brackets, mean ± std over its evaluation episodes (not over seeds). Its
  LunarLander is v2; ours is v3 (gymnasium 1.x), the same task with fixed physics bugs.
- Speed: the median over seeds of ours / SB3 (lower is faster for lightning_pg). Wall time is the whole
  training process, start to exit (imports, evaluations, checkpoints included); fit time the training call
  alone as each process reports it (`Trainer.fit`, `model.learn`). This machine is shared: other processes
  ran beside these, so the absolute seconds are noisy; each ratio compares runs taken back to back.

""" + "\n".join(f"![{case}]({case}.png)" for case in figures) + "\n"
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return out / "report.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short budgets, 2 seeds, 10 episodes, fewer cases")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), help="these configs only (default: all)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick: 2)")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"evaluation episodes per snapshot (default {vs_sb3.EVAL_EPISODES}; --quick: 10)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"), help="where report.md and PNGs go")
    args = parser.parse_args()
    args.seeds = args.seeds or (2 if args.quick else 3)
    args.episodes = args.episodes or (10 if args.quick else vs_sb3.EVAL_EPISODES)
    cases = {case: CASES[case][1 if args.quick else 0] for case in (args.cases or CASES)}
    cases = {case: plan for case, plan in cases.items() if plan is not None}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workdir = tempfile.mkdtemp(prefix="report_")
    start = time.perf_counter()
    results = {}
    for case, (budget, snapshot_every) in cases.items():
        spec = yaml.safe_load(open(REPO / "configs" / f"{case}.yaml"))["model"]["init_args"]
        budget, snapshot_every = budget or spec["total_timesteps"], snapshot_every or spec["eval_every"]
        results[case] = {"env_id": spec["env_id"], "budget": budget, "snapshot_every": snapshot_every, "seeds": []}
        for seed in range(args.seeds):
            row = run_seed(case, budget, snapshot_every, seed, workdir, env, args.episodes)
            results[case]["seeds"].append(row)
            print(f"{case} seed {seed}: final return ours {row['ours']['final']:.1f} / SB3 {row['sb3']['final']:.1f}, "
                  f"wall {row['ours']['wall']:.1f} / {row['sb3']['wall']:.1f} s, fit {row['ours']['fit']:.1f} / "
                  f"{row['sb3']['fit']:.1f} s ({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = write_report(results, out, args, (time.perf_counter() - start) / 60)
    print(f"report: {report} ({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
