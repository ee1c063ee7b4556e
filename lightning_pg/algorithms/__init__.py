"""One LightningModule per algorithm; each file reads like its lecture slide."""
from lightning_pg.algorithms.a2c import A2C
from lightning_pg.algorithms.a3c import A3C
from lightning_pg.algorithms.base import RLModule
from lightning_pg.algorithms.ddpg import DDPG
from lightning_pg.algorithms.off_policy import OffPolicyModule
from lightning_pg.algorithms.on_policy import OnPolicyModule
from lightning_pg.algorithms.ppo import PPO
from lightning_pg.algorithms.reinforce import REINFORCE
from lightning_pg.algorithms.sac import SAC
from lightning_pg.algorithms.td3 import TD3
from lightning_pg.algorithms.trpo import TRPO

__all__ = ["A2C", "A3C", "DDPG", "OffPolicyModule", "OnPolicyModule", "PPO", "REINFORCE", "RLModule", "SAC", "TD3", "TRPO"]
