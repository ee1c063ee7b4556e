"""The command line with some of lightning_pg's fast paths switched off, to measure what each one buys.

    python benchmarks/without.py numpy_actor,fused_body,direct_steps fit --config configs/ppo_cartpole.yaml

- ``numpy_actor``: training rollouts act through the policy module in torch instead of ``NumpyActor``;
- ``fused_body``: a tanh ``StackedMLP`` runs as ordinary autograd ops instead of one node using numpy's tanh;
- ``direct_steps``: every optimizer step goes through Lightning's ``manual_backward``, ``clip_gradients`` and
  ``LightningOptimizer.step`` (``OptimizerSteps``' public path).

All three off is the plainest form: the same objective, networks and data, with no written-out piece. The
rest of the arguments are the CLI's; the process starts as ``python -m lightning_pg`` does.
"""
import gc
import sys

gc.disable()  # as lightning_pg/__main__.py imports
from lightning_pg.cli import main  # noqa: E402
from lightning_pg.networks.actor_critic import StackedMLP  # noqa: E402
from lightning_pg.networks.numpy_actor import NumpyActor  # noqa: E402
from lightning_pg.optimizer_steps import OptimizerSteps  # noqa: E402

gc.freeze()
gc.enable()

SWITCHES = {
    "numpy_actor": (NumpyActor, "enabled"),
    "fused_body": (StackedMLP, "fused"),
    "direct_steps": (OptimizerSteps, "direct_enabled"),
}

if __name__ == "__main__":
    for name in filter(None, sys.argv[1].split(",")):
        cls, attribute = SWITCHES[name]
        setattr(cls, attribute, False)
    sys.argv = ["lightning_pg", *sys.argv[2:]]
    main()
