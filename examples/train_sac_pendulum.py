"""Train SAC on Pendulum through the Python API, keep the replay buffer in the checkpoint, then extend the run.

    python examples/train_sac_pendulum.py
"""
import pytorch_lightning as pl

import lightning_pg
from lightning_pg import SAC


def fit(budget: int, ckpt_path: str | None = None) -> SAC:
    model = SAC(env_id="Pendulum-v1", total_timesteps=budget, learning_rate=1e-3, eval_every=-1)
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
                         default_root_dir="runs/example_sac")  # writes runs/example_sac/checkpoints/last.ckpt
    trainer.fit(model, ckpt_path=ckpt_path)
    return model


pl.seed_everything(0)
fit(1_000)
# a longer budget from the last checkpoint: the buffer, the update count and every RNG come back, so the
# run neither repeats its random warm-up nor bursts to catch up
model = fit(2_000, ckpt_path="runs/example_sac/checkpoints/last.ckpt")
mean, std = lightning_pg.evaluate(model, n_episodes=10, seed=0, deterministic=True)
print(f"after {model.num_timesteps} env steps ({model.num_updates} updates): eval return {mean:.1f} ± {std:.1f}")
