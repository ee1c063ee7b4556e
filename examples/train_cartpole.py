"""Train REINFORCE with a learned baseline on CartPole through the Python API, then evaluate and act.

    python examples/train_cartpole.py
"""
import gymnasium as gym
import pytorch_lightning as pl

import lightning_pg
from lightning_pg import REINFORCE

pl.seed_everything(0)
model = REINFORCE(env_id="CartPole-v1", baseline="value", normalize_returns=True, num_envs=8,
                  total_timesteps=100_000, eval_every=20_000)
trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir="runs/example_cartpole")
trainer.fit(model)

mean, std = lightning_pg.evaluate(model, n_episodes=10, seed=0, deterministic=True)
print(f"after {model.num_timesteps} env steps: eval return {mean:.1f} ± {std:.1f}")

# the checkpoint written during fit loads back with its env-step count
restored = REINFORCE.load_from_checkpoint("runs/example_cartpole/checkpoints/last.ckpt")
env = gym.make("CartPole-v1")
obs, _ = env.reset(seed=0)
action = restored.predict(obs, deterministic=True)  # numpy in, numpy out
print(f"restored at {restored.num_timesteps} env steps; first action {action}")
