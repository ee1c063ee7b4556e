"""Callbacks that count in env steps: checkpoints (with Ctrl+C safety) and the progress bar."""
from lightning_pg.callbacks.checkpoint import RLCheckpoint
from lightning_pg.callbacks.progress import EnvStepProgressBar

__all__ = ["RLCheckpoint", "EnvStepProgressBar"]
