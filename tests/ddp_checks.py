"""A callback for DDP tests: after training, every rank's weights compared (written by rank 0)."""
import os

import pytorch_lightning as pl
import torch


class SameWeightsOnEveryRank(pl.Callback):
    """Writes the largest difference between any rank's weights and rank 0's to ``$WEIGHTS_REPORT``."""

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1).float() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)  # [world_size, P]
        if trainer.is_global_zero:
            with open(os.environ["WEIGHTS_REPORT"], "w") as file:
                file.write(repr(float((gathered - gathered[0]).abs().max())))
