"""Env steps per second of PPO's fit with sync against async envs, side by side, alternating.

    python benchmarks/async_envs.py [--steps 16384] [--repeats 3] [--num-envs 8]

Two envs: CartPole-v1 (a step of a few microseconds: the worker round trip costs more than it saves) and
tests.envs:BusyStep (about 1 ms of CPU per step, a simulator's share). Prints each run's env steps per second
and the median ratio async / sync per env (higher: async is faster).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.envs
import lightning_pg as lp  # noqa: E402


def steps_per_second(env_id: str, vectorization: str, steps: int, num_envs: int) -> float:
    pl.seed_everything(0, verbose=False)
    model = lp.PPO(env_id=env_id, num_envs=num_envs, n_steps=32, batch_size=256, n_epochs=4, total_timesteps=steps,
                   eval_every=-1, vectorization=vectorization)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    return model.num_timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for env_id in ("CartPole-v1", "tests.envs:BusyStep"):
        ratios = []
        for _ in range(args.repeats):
            sync = steps_per_second(env_id, "sync", args.steps, args.num_envs)
            async_ = steps_per_second(env_id, "async", args.steps, args.num_envs)
            ratios.append(async_ / sync)
            print(f"{env_id}: sync {sync:.0f}, async {async_:.0f} env steps/s, async / sync {async_ / sync:.2f}",
                  flush=True)
        print(f"{env_id}: median async / sync {statistics.median(ratios):.2f} (PPO, {args.num_envs} envs, "
              f"{args.steps} env steps)", flush=True)


if __name__ == "__main__":
    main()
