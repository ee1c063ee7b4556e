"""The off-policy family's shared part (DDPG, TD3, SAC): replay data, action scaling, one-step targets, resume.

An algorithm provides ``train_step(minibatch, optimizers)``: ONE gradient step of every network on a ``[B]``
minibatch, returning detached stats (``loss_q``, ...). Target networks: ``networks.targets``."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lightning_pg.algorithms.base import RLModule, check
from lightning_pg.data.replay import ReplayIterable
from lightning_pg.errors import EnvError


class OffPolicyModule(RLModule):
    """Base class of DDPG, TD3 and SAC (not used alone).

    Actors act in [-1, 1]^d, the replay buffer keeps those actions, ``env_actions`` rescales them into the env's
    bounds. Checkpoints hold the replay buffer (contents and position), every RNG state and the update count: a
    resumed run neither redoes the random warm-up nor bursts to catch up (a batch runs ``gradient_steps`` updates).

    Args:
        buffer_size: replay capacity in transitions (>= num_envs); the oldest are overwritten.
        learning_starts: env steps of uniform random actions before the first update (SB3's name).
        batch_size: transitions per gradient step.
        tau: Polyak coefficient of the target networks, θ' ← (1 − τ) θ' + τ θ, in (0, 1].
        train_freq: steps of the (vector) env between two rounds of updates (>= 1).
        gradient_steps: gradient steps per round (>= 1), all in one Lightning ``training_step``.
        save_replay_buffer: keep the buffer in checkpoints. Turn off for huge buffers: a resumed run then refills
            it with the current policy before updating again (and says so in the log).
        matmul_precision: ``torch.set_float32_matmul_precision`` in the gradient steps: ``"medium"`` runs their
            float32 matmuls in bfloat16 with float32 accumulation (AMX on recent Xeons, tensor cores on GPUs; 25%
            off SAC's update here, same returns: README); ``"highest"`` is exact float32. Acting stays exact.
        **kwargs: the shared arguments of :class:`~lightning_pg.algorithms.base.RLModule`.
    """

    supported_action_spaces = (spaces.Box,)
    needs_bounded_actions = True
    network_copies = 6  # actor, two critics, and their target copies

    def __init__(
        self,
        env_id: str,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        train_freq: int = 1,
        gradient_steps: int = 1,
        save_replay_buffer: bool = True,
        matmul_precision: Literal["highest", "high", "medium"] = "highest",
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, **kwargs)
        num_envs = self.hparams.num_envs
        check(buffer_size >= num_envs, "buffer_size", buffer_size, f"an integer >= num_envs ({num_envs})")
        check(learning_starts >= 0, "learning_starts", learning_starts, "an integer >= 0")
        check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check(0.0 < tau <= 1.0, "tau", tau, "in (0, 1] (1 copies the weights)")
        check(train_freq >= 1, "train_freq", train_freq, "an integer >= 1")
        check(gradient_steps >= 1, "gradient_steps", gradient_steps, "an integer >= 1")
        check(matmul_precision in ("highest", "high", "medium"), "matmul_precision", matmul_precision,
              "'highest', 'high' or 'medium'")
        if len(self.action_space.shape) != 1:
            raise EnvError(f"{type(self).__name__} takes a 1-D Box action space, but '{env_id}' has {self.action_space}. "
                           "Fix: give the env a 1-D Box action space (a wrapper that reshapes its actions), or use PPO, A2C or "
                           "REINFORCE, which take other action spaces.")
        self.act_dim = int(self.action_space.shape[0])
        self.check_first_batch(train_freq * num_envs, f"train_freq * num_envs = {train_freq} * {num_envs}")
        self.num_updates = 0  # gradient steps so far (SB3's _n_updates; TD3's policy delay counts them)
        self.replay: ReplayIterable | None = None

    def fit_memory(self) -> dict[str, int]:
        """The replay buffer, and the copy of its filled rows a checkpoint makes."""
        hp, dtype = self.hparams, self.observation_space.dtype  # float observations are stored as float32
        row = 2 * int(np.prod(self.observation_space.shape)) * (4 if dtype.kind == "f" else dtype.itemsize) \
            + 4 * self.act_dim + 6  # obs, next_obs, actions, reward, two flags
        return {"the replay buffer (and its copy in a checkpoint)": hp.buffer_size * row * (1 + hp.save_replay_buffer)}

    def train_step(self, batch: dict[str, Tensor], optimizers: list[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def to_env_scale(self, actions: Tensor) -> Tensor:
        """[-1, 1] -> the env's bounds: (high + low) / 2 + a (high - low) / 2, clipped against rounding."""
        low, high = self.action_low, self.action_high
        scaled = (high + low) / 2 + (high - low) / 2 * actions
        return torch.maximum(torch.minimum(scaled, high), low)

    def env_actions(self, actions: Tensor) -> np.ndarray:
        return self.to_env_scale(actions.detach()).float().cpu().numpy()  # (float: bf16-true has no numpy dtype)

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic policy as an exportable function: observations -> env actions."""
        return self.to_env_scale(self.act(obs, deterministic=True))

    def explore(self, obs: Tensor) -> Tensor:
        """Actions in [-1, 1] while collecting data (DDPG adds exploration noise)."""
        return self.act(obs, deterministic=False)

    def episodes_ended(self, envs: np.ndarray) -> None:
        """The episodes of ``envs`` (indices) ended in the training envs."""

    def make_data(self) -> ReplayIterable:
        if self.replay is None:  # a second fit() of this model keeps its buffer
            hp = self.hparams
            self.replay = ReplayIterable(
                self, self.env_settings, self.observation_space, self.act_dim, buffer_size=hp.buffer_size,
                learning_starts=hp.learning_starts, batch_size=hp.batch_size, train_freq=hp.train_freq,
                gradient_steps=hp.gradient_steps, save_buffer=hp.save_replay_buffer, explore=self.explore,
                episodes_ended=self.episodes_ended,
            )
        return self.replay  # Lightning saves and restores its state (buffer, RNGs, envs) with the fit loop's

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if "obs" not in batch:  # random warm-up: nothing to learn from yet
            return {}
        optimizers, outer = self.optimizers(), torch.get_float32_matmul_precision()
        if not isinstance(optimizers, list):  # Lightning hands a lone optimizer over bare; train_step takes a list
            optimizers = [optimizers]
        if isinstance(self.hparams.learning_rate, str):  # a schedule ("lin_1e-3"): every optimizer follows it
            for optimizer in optimizers:
                self.set_learning_rate(optimizer)
        torch.set_float32_matmul_precision(self.hparams.matmul_precision)  # the updates only: acting stays exact
        torch.set_flush_denormal(True)  # denormals (< 1e-38) creep into the critics and slow every update
        try:
            steps = [self.train_step({k: v[g] for k, v in batch.items()}, optimizers) for g in range(len(batch["obs"]))]
        finally:  # process-wide settings: back as they were, also when a step raises
            torch.set_float32_matmul_precision(outer)
            torch.set_flush_denormal(False)
        if len(steps) == 1:
            return self.metric_names(steps[0])
        keys = {k for step in steps for k in step}  # mean over the steps (TD3's actor loss: where it ran)
        return self.metric_names({k: torch.stack([s[k] for s in steps if k in s]).mean() for k in keys})

    def td_target(self, batch: dict[str, Tensor], next_values: Tensor) -> Tensor:
        """y = r + γ (1 − terminated) V(s'): only termination cuts the bootstrap, a time-limit cut does not."""
        return batch["rewards"] + self.hparams.gamma * (1.0 - batch["terminated"].float()) * next_values

    partial_backward = True  # the critic's steps leave the actor out, the actor's the critic

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.hparams.save_replay_buffer:
            rank_zero_info(f"{type(self).__name__}: save_replay_buffer=False, checkpoints leave the replay buffer out.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["off_policy"] = {"num_updates": self.num_updates}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.num_updates = int(checkpoint["off_policy"]["num_updates"])
