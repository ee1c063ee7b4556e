"""Learning check: train a config for several seeds through the CLI, evaluate each final last.ckpt.

    python benchmarks/learning.py configs/reinforce_cartpole.yaml --seeds 0 1 2 [--episodes 20] [-- extra CLI args]
    python benchmarks/learning.py configs/ppo_pendulum_gsde.yaml --eval-seeds 0 100 200 --episodes 10

Prints, per seed, the deterministic evaluation mean/std of the final `last.ckpt` (lightning_pg.evaluate,
`--episodes` episodes from eval seed 0, or from each of `--eval-seeds`: other start states) and the wall
time of the fit; runs are sequential so timings are comparable. ``--threshold`` passes when every mean
reaches it.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0], help="evaluate from each of these seeds")
    parser.add_argument("--threshold", type=float, default=None, help="report PASS/FAIL against this mean")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    algo = yaml.safe_load(open(args.config))["model"]["class_path"].rsplit(".", 1)[1]
    means = []
    for seed in args.seeds:
        root = tempfile.mkdtemp(prefix=f"learning_{algo}_s{seed}_")
        cmd = [sys.executable, "-m", "lightning_pg", "fit", "--config", args.config, "--seed_everything", str(seed),
               "--trainer.default_root_dir", root, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
               *extra]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        wall = time.perf_counter() - start
        for eval_seed in args.eval_seeds:
            code = (f"import lightning_pg as lp; m = lp.{algo}.load_from_checkpoint('{root}/run_1/checkpoints/last.ckpt'); "
                    f"print(m.num_timesteps, *lp.evaluate(m, {args.episodes}, seed={eval_seed}, deterministic=True))")
            out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
            steps, mean, std = out.stdout.split()[-3:]
            means.append(float(mean))
            print(f"{algo} seed {seed}: eval {float(mean):8.1f} ± {float(std):6.1f} (eval seed {eval_seed}) after "
                  f"{steps} env steps, fit wall time {wall:6.1f} s  ({root})", flush=True)
    verdict = ""
    if args.threshold is not None:
        verdict = "  PASS" if min(means) >= args.threshold else "  FAIL"
    print(f"{algo} {Path(args.config).name}: means {[round(m, 1) for m in means]}, min {min(means):.1f}{verdict}")


if __name__ == "__main__":
    main()
