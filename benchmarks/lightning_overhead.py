"""What Lightning and the CLI cost: `python -m lightning_pg fit` against a bare PyTorch loop of the same math.

    python benchmarks/lightning_overhead.py [--config configs/ppo_cartpole.yaml] [--steps 200000] [--repeats 3]

Alternates, as whole processes: the CLI run exactly as a user starts it (its default W&B logger in offline
mode, periodic evaluation and checkpoints from the config) and `benchmarks/bare_ppo.py` (the same rollouts,
updates, evaluations and checkpoint writes, no Lightning). Prints per run the whole-process wall time and
the training time each reports (Trainer.fit for the CLI, the loop for the bare script), then the median
ratios CLI / bare.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd, env):
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return time.perf_counter() - start, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/ppo_cartpole.yaml")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WANDB_MODE", None)  # the CLI's own default: offline
    walls, fits = [], []
    print(f"{'run':>3s} | {'cli wall':>8s} {'bare wall':>9s} {'ratio':>6s} | {'cli fit':>7s} {'bare loop':>9s} {'ratio':>6s}")
    for run in range(args.repeats):
        root = tempfile.mkdtemp(prefix="overhead_cli_")
        cli_wall, cli_out = timed([sys.executable, "-m", "lightning_pg", "fit", "--config", args.config,
                                   f"--model.total_timesteps={args.steps}", "--seed_everything", str(run),
                                   "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", root], env)
        bare_wall, bare_out = timed([sys.executable, "benchmarks/bare_ppo.py", "--config", args.config,
                                     "--steps", str(args.steps), "--seed", str(run)], env)
        cli_fit = float(re.search(r"in ([\d.]+) s of fit", cli_out).group(1))
        bare_loop = float(re.search(r"in ([\d.]+) s of loop", bare_out).group(1))
        walls.append(cli_wall / bare_wall)
        fits.append(cli_fit / bare_loop)
        print(f"{run:>3d} | {cli_wall:8.2f} {bare_wall:9.2f} {walls[-1]:6.2f} | {cli_fit:7.2f} {bare_loop:9.2f} {fits[-1]:6.2f}",
              flush=True)
    print(f"median ratio CLI / bare: process wall {statistics.median(walls):.3f}, training {statistics.median(fits):.3f}")


if __name__ == "__main__":
    main()
