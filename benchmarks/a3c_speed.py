"""A3C's env steps per second against A2C's, side by side: the same n_steps and envs per worker.

    python benchmarks/a3c_speed.py [--steps 200000] [--repeats 3] [--workers 2]

Runs configs/a2c_cartpole.yaml (8 envs, n_steps 5: one process) and configs/a3c_cartpole.yaml (``--workers``
processes of 8 envs each) alternately through the CLI, without evaluation or logger, and prints each run's
env steps per second of fit (the CLI's end line), then the median ratio A3C / A2C.
"""
import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(config: str, steps: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as root:
        cmd = [sys.executable, "-m", "lightning_pg", "fit", "--config", config, "--seed_everything", "0",
               "--trainer.default_root_dir", root, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
               "--model.eval_every=-1", f"--model.total_timesteps={steps}", *extra]
        out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    return float(re.search(r"fit, (\d+) env steps/s", out.stderr + out.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    a2c, a3c = [], []
    for i in range(args.repeats):
        a2c.append(run("configs/a2c_cartpole.yaml", args.steps, []))
        a3c.append(run("configs/a3c_cartpole.yaml", args.steps, [f"--model.workers={args.workers}"]))
        print(f"run {i}: A2C {a2c[-1]:8.0f} env steps/s   A3C ({args.workers} workers) {a3c[-1]:8.0f} env steps/s   "
              f"ratio {a3c[-1] / a2c[-1]:.2f}", flush=True)
    print(f"median A3C / A2C: {statistics.median(a3c) / statistics.median(a2c):.2f} "
          f"(A2C {statistics.median(a2c):.0f}, A3C {statistics.median(a3c):.0f} env steps/s)")


if __name__ == "__main__":
    main()
