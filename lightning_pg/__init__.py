"""lightning_pg: policy-gradient and actor-critic reinforcement learning on PyTorch Lightning."""
import gc
import warnings

# Lightning's notes on choices made here on purpose: `training_step(dataloader_iter)` turns off its
# one-batch prefetch (on-policy data must be collected after each update), and validate/test loaders are
# empty during fit (evaluation runs on the env-step clock instead).
for _message in (".*dataloader_iter.*", "Total length of .* across ranks is zero.*", ".*LeafSpec.*is deprecated.*"):
    warnings.filterwarnings("ignore", message=_message)

# Importing torch and Lightning (~2,000 modules) builds ~300,000 long-lived objects that the cyclic GC tracks;
# its passes over them during the import freed nothing (a gc.collect() after it finds 0) but took 0.17 s of
# a 2.2 s import here.
_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from lightning_pg.algorithms import A2C, DDPG, PPO, REINFORCE, SAC, TD3, OffPolicyModule, OnPolicyModule, RLModule
    from lightning_pg.errors import ConfigError, EnvError, LightningPGError, TrainingDiverged
    from lightning_pg.evaluation import evaluate
finally:
    if _gc_was_enabled:
        gc.enable()

__version__ = "0.1.0"
__all__ = [
    "A2C", "PPO", "REINFORCE", "DDPG", "TD3", "SAC", "OnPolicyModule", "OffPolicyModule", "RLModule", "evaluate",
    "ConfigError", "EnvError", "LightningPGError", "TrainingDiverged", "__version__",
]
