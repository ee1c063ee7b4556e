"""What each piece of the on-policy update buys: microseconds per gradient step, variant by variant.

    python benchmarks/update_step.py [--algos PPO A2C] [--repeats 7] [--compile]

For the CartPole zoo settings of PPO (256-sample minibatches) and A2C (40-sample batches), each variant is a
model fitted for one rollout through a real Trainer (so its optimizer, flat parameters and step path are the
ones a run uses), then timed on ``update(batch)`` for that batch, all variants interleaved in one process
(this machine's speed drifts; medians of ``--repeats`` rounds). The variants add one piece at a time:

- ``separate MLPs``: the policy and value bodies as two ``nn.Linear`` MLPs, every op under autograd, every
  optimizer step through Lightning's manual_backward / clip_gradients / optimizer.step;
- ``stacked``: the two bodies as one StackedMLP (one baddbmm per layer);
- ``+ direct steps``: the optimizer step taken directly where Lightning's hooks would do nothing;
- ``+ fused tanh body``: the body as one autograd node with numpy's tanh (where it has enough rows), i.e. what
  lightning_pg runs;
- ``--compile``: the last with ``loss`` under ``torch.compile`` (its compile time is printed too).

It also prints the cost of one tanh over a [2, 256, 64] array in torch and in numpy, the reason for the fused body.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch

import lightning_pg
from lightning_pg.networks import MLP
from lightning_pg.networks.actor_critic import TwinEncoders
from lightning_pg.networks.actor_critic import StackedMLP
from lightning_pg.optimizer_steps import OptimizerSteps

ZOO = {
    "PPO": dict(n_steps=32, batch_size=256, n_epochs=20, gae_lambda=0.8, gamma=0.98, learning_rate="lin_1e-3",
                clip_range="lin_0.2"),
    "A2C": dict(),
}


def separate_bodies(model: lightning_pg.OnPolicyModule) -> None:
    """Replace the stacked body by two separate MLPs of the same sizes (same maths, twice the ops)."""
    stacked = model.policy.body
    width = stacked.out_features
    model.policy.body = TwinEncoders(MLP(4, model.network, "tanh"), MLP(4, model.network, "tanh"))
    model.policy.orthogonal_init()
    assert width == model.policy.body.pi.out_features


def prepared(algo: str, separate: bool, direct: bool, fused: bool, compiled: bool):
    """A fitted model of the variant and a zero-argument function running one update on a fixed batch."""
    OptimizerSteps.direct_enabled, StackedMLP.fused = direct, fused
    pl.seed_everything(0)
    model = getattr(lightning_pg, algo)(env_id="CartPole-v1", num_envs=8, total_timesteps=10**9, eval_every=-1,
                                        **ZOO[algo])
    if separate:
        separate_bodies(model)
    seen = {}
    update = model.update

    def first(batch):
        seen.setdefault("batch", batch)
        model.trainer.should_stop = True
        return update(batch)

    model.update = first
    pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
               accelerator="cpu", max_epochs=-1, max_steps=1).fit(model)
    model.log_due = False
    if compiled:
        start = time.perf_counter()
        model.loss = torch.compile(model.loss)
        update(seen["batch"])
        print(f"  ({algo}: torch.compile's first update took {time.perf_counter() - start:.1f} s)", flush=True)
    steps = ZOO[algo].get("n_epochs", 1)
    switches = (direct, fused)

    def run() -> float:
        OptimizerSteps.direct_enabled, StackedMLP.fused = switches  # (fused is read per forward)
        start = time.perf_counter()
        update(seen["batch"])
        return (time.perf_counter() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["PPO", "A2C"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    x = torch.randn(2, 256, 64)
    for name, fn in (("torch.tanh", lambda: torch.tanh(x)), ("numpy tanh", lambda: np.tanh(x.numpy()))):
        start = time.perf_counter()
        for _ in range(2000):
            fn()
        print(f"{name} over [2, 256, 64] floats: {(time.perf_counter() - start) / 2000 * 1e6:.1f} us")
    variants = {"separate MLPs": (True, False, False, False), "stacked": (False, False, False, False),
                "+ direct steps": (False, True, False, False), "+ fused tanh body": (False, True, True, False)}
    if args.compile:
        variants["+ torch.compile(loss)"] = (False, True, True, True)
    for algo in args.algos:
        runs = {name: prepared(algo, *flags) for name, flags in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        rounds = 300 if algo == "A2C" else 20
        for _ in range(args.repeats):
            for name, run in runs.items():
                for _ in range(3):
                    run()
                times[name].append(statistics.mean(run() for _ in range(rounds)))
        print(f"{algo} (CartPole zoo settings), us per gradient step, median of {args.repeats}:")
        for name, values in times.items():
            print(f"  {name:24s} {statistics.median(values) * 1e6:7.0f}")


if __name__ == "__main__":
    main()
