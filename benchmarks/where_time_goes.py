"""Where an on-policy fit spends its time: the CLI run with timers around the rollout, env and update calls.

    python benchmarks/where_time_goes.py fit --config configs/ppo_cartpole.yaml --model.eval_every=-1 \\
        --trainer.logger=false --trainer.enable_progress_bar=false --trainer.default_root_dir /tmp/wtg

Takes the CLI's arguments. After the run it prints seconds spent in: the imports (done as `python -m
lightning_pg` does them), the fit, the rollouts (RolloutIterable.collect), inside them the env step with
our checks (EnvIterable.step) and gymnasium's SyncVectorEnv.step alone, the updates (update()), the
periodic evaluations, the checkpoint writes, the writes to the loggers, and the whole process. What the fit
spends outside those is Lightning's loop and our per-batch bookkeeping.
"""
import atexit
import functools
import sys
import time
from collections import defaultdict

START = time.perf_counter()
SECONDS: dict = defaultdict(float)


def timed(cls, name: str, key: str) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)  # Lightning inspects training_step's signature
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[key] += time.perf_counter() - start

    setattr(cls, name, wrapper)


def report() -> None:
    SECONDS["process (so far)"] = time.perf_counter() - START
    for key, seconds in SECONDS.items():
        print(f"{key:28s} {seconds:7.2f} s", file=sys.stderr)


def main() -> None:
    import gc

    gc.disable()  # as python -m lightning_pg does (lightning_pg/__main__.py)
    import lightning_pg.cli

    gc.freeze()
    gc.enable()
    SECONDS["imports"] = time.perf_counter() - START
    import gymnasium
    import pytorch_lightning as pl

    from lightning_pg import cli
    from lightning_pg.algorithms.base import RLModule
    from lightning_pg.algorithms.on_policy import OnPolicyModule
    from lightning_pg.algorithms.ppo import PPO
    from lightning_pg.data.base import EnvIterable
    from lightning_pg.data.rollouts import RolloutIterable

    timed(pl.Trainer, "fit", "fit")
    timed(RolloutIterable, "collect", "rollouts")
    timed(EnvIterable, "step", "  env step + our checks")
    timed(gymnasium.vector.SyncVectorEnv, "step", "  SyncVectorEnv.step alone")
    timed(OnPolicyModule, "update", "updates")
    timed(PPO, "update", "updates")
    timed(RLModule, "run_evaluation", "evaluations")
    timed(pl.Trainer, "save_checkpoint", "checkpoint writes")
    timed(RLModule, "_to_loggers", "logger writes")
    atexit.register(report)
    sys.argv = ["lightning_pg", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
