r"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

A2C's objective, computed asynchronously. ``workers`` processes each play their own envs with their own copy
of the policy, and compute on each n-step rollout the gradient of

    L = mean(−log π(a|s) · Â) + vf_coef · mean((V(s) − R)²) − ent_coef · mean(H[π(·|s)])

(``A2C.loss``, the same code). The learner applies each gradient with its optimizer as it arrives, while the
other workers keep playing, and publishes the new weights; a worker copies them before its next rollout. A
gradient may therefore have been computed with weights a few updates old: ``a3c/policy_lag`` logs how many.

Why this scheme (the paper's) rather than GA3C's actors feeding a central learner: the learner only applies
gradients, so the forward and backward passes run in the workers, in parallel, and the data never crosses
processes (a gradient is one vector, a rollout of observations is more); the module's optimizer, checkpoint,
schedules and logging stay Lightning's. See :mod:`lightning_pg.data.gradient_workers`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_pg.algorithms.a2c import A2C
from lightning_pg.algorithms.base import check
from lightning_pg.data.gradient_workers import GradientWorkers
from lightning_pg.data.rollouts import RolloutIterable
from lightning_pg.errors import ConfigError


class A3C(A2C):
    """A3C: A2C's loss and defaults (RMSprop, lr 7e-4, n_steps 5), computed by ``workers`` processes.

    Args:
        workers: worker processes (>= 1), each with ``num_envs`` envs of its own (one per core is the
            natural choice; the training process itself mostly waits).
        **kwargs: see :class:`~lightning_pg.algorithms.a2c.A2C` (n_steps, gae_lambda, ...). ``num_envs`` is
            per worker.

    Logged: ``loss/policy``, ``loss/value``, ``loss/entropy`` as the worker computed them, and
    ``a3c/policy_lag``: updates applied between the weights the worker played with and its gradient's turn.

    Differences from the paper: RMSprop's statistics live in the learner (the paper shares them between
    Hogwild threads); observation and reward normalization are refused (each worker would keep its own
    statistics); single-process (DDP is refused: the workers are its parallelism).
    """

    def __init__(self, env_id: str, workers: int = 2, **kwargs: Any):
        super().__init__(env_id=env_id, **kwargs)
        check(isinstance(workers, int) and workers >= 1, "workers", workers, "an integer >= 1")
        if self.hparams.vectorization == "async":
            raise ConfigError(
                "A3C's workers are processes already, and cannot start async env workers of their own. Fix: set "
                "vectorization to sync for A3C; its workers step their envs in parallel."
            )
        if self.hparams.normalize_obs or self.hparams.normalize_reward:
            raise ConfigError(
                "A3C's workers would each keep their own running observation and reward statistics, so the policy "
                "would see differently scaled inputs in each. Fix: set normalize_obs and normalize_reward to "
                "false for A3C, or use A2C or PPO with them."
            )

    def make_data(self) -> GradientWorkers:
        return GradientWorkers(self, self.hparams.workers)

    def make_rollouts(self) -> RolloutIterable:
        """A worker's n-step rollouts (A2C's data, in the worker process)."""
        return super().make_data()

    def update(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        optimizer = self.optimizers()
        self.set_learning_rate(optimizer)
        data: GradientWorkers = self._train_data
        lag = data.current_version - batch["version"]
        # the worker's ∇L: one optimizer step, clipped as A2C's (the same path as every algorithm's steps)
        self.apply_gradient(batch["gradients"], optimizer, self.hparams.max_grad_norm)
        data.publish([p for group in optimizer.param_groups for p in group["params"]])
        return self.metric_names({**batch["losses"], "policy_lag": torch.tensor(float(lag))})

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.device.type != "cpu":
            raise ConfigError(
                f"A3C's workers play and differentiate on the CPU, in forked processes that cannot use "
                f"{self.device.type}. Fix: --trainer.accelerator cpu (its networks are small), or use A2C or PPO on "
                "the accelerator."
            )
        if self.trainer.world_size > 1:
            raise ConfigError(
                "A3C runs in one process with its own worker processes (they are its parallelism), not under "
                "a multi-process strategy. Fix: drop --trainer.strategy/--trainer.devices, and raise "
                "--model.workers instead."
            )
