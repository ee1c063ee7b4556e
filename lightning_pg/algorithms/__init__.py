"""One LightningModule per algorithm; each file reads like its lecture slide."""
from lightning_pg.algorithms.base import RLModule
from lightning_pg.algorithms.reinforce import REINFORCE

__all__ = ["RLModule", "REINFORCE"]
