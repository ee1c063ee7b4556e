"""What Lightning and the CLI cost: `python -m lightning_pg fit` against a bare PyTorch loop of the same math.

    python benchmarks/lightning_overhead.py [--config configs/ppo_cartpole.yaml] [--steps 200000] [--repeats 3]

Alternates, as whole processes: the CLI run exactly as a user starts it (its default W&B logger in offline
mode, periodic evaluation and checkpoints from the config), `benchmarks/bare_ppo.py` (the same rollouts,
updates, evaluations, checkpoint writes and W&B logging, no Lightning), and the bare loop without W&B.
Prints per run the whole-process wall time and the training time each reports (Trainer.fit for the CLI,
the loop for the bare script), then the median ratios: CLI / bare is Lightning's cost (and our
bookkeeping's); CLI / bare without W&B adds what the experiment tracking itself costs.
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
    ratios: dict[str, list[float]] = {"wall": [], "fit": [], "wall, bare without W&B": [], "fit, bare without W&B": []}
    print(f"{'run':>3s} | {'cli wall':>8s} {'bare wall':>9s} {'ratio':>6s} | {'cli fit':>7s} {'bare loop':>9s} {'ratio':>6s} "
          f"| {'no-W&B wall':>11s} {'ratio':>6s} | {'no-W&B loop':>11s} {'ratio':>6s}")
    for run in range(args.repeats):
        root = tempfile.mkdtemp(prefix="overhead_cli_")
        cli_wall, cli_out = timed([sys.executable, "-m", "lightning_pg", "fit", "--config", args.config,
                                   f"--model.total_timesteps={args.steps}", "--seed_everything", str(run),
                                   "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", root], env)
        bare = [sys.executable, "benchmarks/bare_ppo.py", "--config", args.config, "--steps", str(args.steps),
                "--seed", str(run)]
        bare_wall, bare_out = timed(bare, env)
        plain_wall, plain_out = timed([*bare, "--no-wandb"], env)
        cli_fit = float(re.search(r"in ([\d.]+) s of fit", cli_out).group(1))
        bare_loop, plain_loop = (float(re.search(r"in ([\d.]+) s of loop", out).group(1)) for out in (bare_out, plain_out))
        for key, value in zip(ratios, (cli_wall / bare_wall, cli_fit / bare_loop, cli_wall / plain_wall, cli_fit / plain_loop)):
            ratios[key].append(value)
        print(f"{run:>3d} | {cli_wall:8.2f} {bare_wall:9.2f} {ratios['wall'][-1]:6.2f} | {cli_fit:7.2f} {bare_loop:9.2f} "
              f"{ratios['fit'][-1]:6.2f} | {plain_wall:11.2f} {ratios['wall, bare without W&B'][-1]:6.2f} | "
              f"{plain_loop:11.2f} {ratios['fit, bare without W&B'][-1]:6.2f}", flush=True)
    print("median ratio CLI / bare: " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
