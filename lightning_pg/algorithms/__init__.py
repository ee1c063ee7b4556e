"""One LightningModule per algorithm; each file reads like its lecture slide."""
from lightning_pg.algorithms.a2c import A2C
from lightning_pg.algorithms.base import RLModule
from lightning_pg.algorithms.on_policy import OnPolicyModule
from lightning_pg.algorithms.ppo import PPO
from lightning_pg.algorithms.reinforce import REINFORCE

__all__ = ["A2C", "OnPolicyModule", "PPO", "REINFORCE", "RLModule"]
