"""The on-policy family (REINFORCE, A2C, PPO): a stochastic policy π(a|s) with a value V(s), trained only
on data played by the current policy, with the options Stable-Baselines3 users expect (orthogonal init,
state-independent log-std, observation and reward normalization, linear schedules).

An algorithm writes its objective once, in ``loss(batch)``: a dict of ``loss_*`` terms (summed and
differentiated by autograd) and detached statistics. Everything that makes it fast sits below that line and
computes the same function: the stacked MLP body (one autograd node on the CPU, ``networks.actor_critic``),
numpy acting (``networks.numpy_actor``, only for the exact standard policy) and direct optimizer steps
(``optimizer_steps``).
"""
from __future__ import annotations

import operator
from functools import reduce
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from lightning_pg.algorithms.base import RLModule, check
from lightning_pg.errors import ConfigError
from lightning_pg.data.rollouts import RolloutIterable, TorchActor
from lightning_pg.networks import ActorCritic, RunningMeanStd
from lightning_pg.networks.encoders import ACTIVATIONS, has_images
from lightning_pg.networks.numpy_actor import NumpyActor


class OnPolicyModule(RLModule):
    """Base of REINFORCE, A2C and PPO (not used alone).

    Args:
        ent_coef: entropy bonus weight, typically 0 to 0.01.
        vf_coef: value loss weight, typically 0.25 to 1.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        activation: hidden activation of the MLPs (tanh, relu, elu, gelu, silu).
        ortho_init: orthogonal initialization (hidden gain √2, policy 0.01, value 1), as SB3 does.
        log_std_init: initial log standard deviation of Gaussian policies (continuous actions).
        normalize_obs: running mean/std observation normalization (SB3's VecNormalize(norm_obs=True));
            the statistics are checkpointed, and frozen in predict, evaluate and exported policies.
        normalize_reward: scale rewards by the running std of the discounted return (VecNormalize(norm_reward=True)).
        use_sde: generalized state-dependent exploration (gSDE, Raffin et al. 2022) for Box actions: the action
            noise is z(s) E, the policy's features times an exploration matrix E ~ N(0, σ²) held for several
            steps, so exploration is smooth in time and in the state (see ``StateDependentGaussian``).
        sde_sample_freq: draw new exploration matrices every this many steps (-1: once per rollout).
        full_std: gSDE's σ per feature and action (True) or per feature only.
        use_expln: gSDE's σ through exp below 0 and log1p(x) + 1 above, instead of exp (keeps σ from growing fast).
        **kwargs: the shared arguments of :class:`~lightning_pg.algorithms.base.RLModule`; here
            ``learning_rate`` may be a schedule, e.g. ``"lin_1e-3"``.
    """

    uses_value = True  # whether the algorithm learns V(s) (REINFORCE without a baseline does not)

    def __init__(
        self,
        env_id: str,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        activation: str = "tanh",
        ortho_init: bool = True,
        log_std_init: float = 0.0,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        full_std: bool = True,
        use_expln: bool = False,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, **kwargs)
        check(ent_coef >= 0, "ent_coef", ent_coef, ">= 0")
        check(vf_coef >= 0, "vf_coef", vf_coef, ">= 0")
        check(max_grad_norm is None or max_grad_norm > 0, "max_grad_norm", max_grad_norm, "> 0 or null")
        check(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(ACTIVATIONS)}")
        check(isinstance(sde_sample_freq, int) and (sde_sample_freq == -1 or sde_sample_freq >= 1),
              "sde_sample_freq", sde_sample_freq, "-1 (once per rollout) or an integer >= 1")
        if use_sde and not isinstance(self.action_space, spaces.Box):
            raise ConfigError(
                f"use_sde (gSDE) explores continuous actions, but '{env_id}' has {self.action_space}. Fix: set "
                "--model.use_sde false for this env (its discrete actions are sampled from their probabilities)."
            )
        if normalize_obs and has_images(self.raw_observation_space):
            raise ConfigError(
                f"normalize_obs standardizes vector observations, but '{env_id}' gives images, which the CNN "
                "already scales to [0, 1] (standardized first, its input would be near 0). Fix: set "
                "--model.normalize_obs false for this env."
            )
        self.policy = self.make_policy()
        self.ret_rms = RunningMeanStd(()) if normalize_reward else None

    def check_rollout(self, n_steps: int) -> None:
        """A rollout of ``n_steps`` per env fits the budget."""
        self.check_first_batch(n_steps * self.hparams.num_envs, f"n_steps * num_envs = {n_steps} * {self.hparams.num_envs}")

    def fit_memory(self) -> dict[str, int]:
        """A rollout: observations kept raw and as the networks saw them, a minibatch copy, a few floats per step."""
        steps = self.hparams.get("n_steps", 1) * self.hparams.num_envs
        return {"a rollout": steps * (3 * int(np.prod(self.observation_space.shape)) * 4 + 64)}

    def make_policy(self) -> ActorCritic:
        """The policy and value network from the hyperparameters; override it to bring your own (any body whose
        output indexes ``[0]`` for the policy's features and ``[1]`` for the value's, see ActorCritic)."""
        return ActorCritic.build(
            self.raw_observation_space, self.action_space, self.network, self.hparams.activation, self.uses_value,
            self.hparams.ortho_init, self.hparams.log_std_init, self.hparams.normalize_obs, self.hparams.use_sde,
            self.hparams.full_std, self.hparams.use_expln,
        )

    # ---- acting -----------------------------------------------------------------------------------------
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        dist = self.policy.policy_dist(self.policy.normalize(obs))
        return dist.mode() if deterministic else dist.sample()

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic policy as an exportable function: observations as the networks take them (Box
        observations as they are; others flattened, see ``envs.FlatObservation``) -> the policy's actions (Box
        actions clipped into the bounds; discrete ones as head indices, before ``env_actions`` adds a space's
        start and shape)."""
        action = self.act(obs, deterministic=True)
        if self.action_low is not None:
            action = torch.maximum(torch.minimum(action, self.action_high), self.action_low)
        return action

    def act_on_array(self, obs: np.ndarray, deterministic: bool) -> Tensor | np.ndarray:
        # the standard act() of the standard policy: through numpy views of the weights (see NumpyActor)
        if type(self).act is OnPolicyModule.act and NumpyActor.mirrors(self.policy):
            return NumpyActor(self.policy).predict(obs, deterministic)
        return super().act_on_array(obs, deterministic)

    def rollout_actor(self) -> NumpyActor | TorchActor:
        """What a training rollout acts with (made per rollout): numpy views of the weights where the policy is
        exactly the standard MLP one on the CPU (see NumpyActor), else the policy module itself."""
        if NumpyActor.mirrors(self.policy):
            return NumpyActor(self.policy)
        return TorchActor(self.policy, self.device, self.hparams.sde_sample_freq if self.hparams.use_sde else None)

    # ---- training ---------------------------------------------------------------------------------------
    def make_data(self) -> RolloutIterable:
        """n-step rollouts with GAE (A2C, PPO; REINFORCE plays whole episodes instead)."""
        hp = self.hparams
        return RolloutIterable(self, self.env_settings, hp.n_steps, hp.gamma, hp.gae_lambda, self.rollout_actor,
                               self.ret_rms)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``loss_*`` terms (summed into the objective) and detached stats; see each algorithm."""
        raise NotImplementedError

    def value_loss(self, values: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """vf_coef · mean((V(s) − R)²): the critic's regression onto the returns."""
        return self.hparams.vf_coef * F.mse_loss(values, batch["returns"])

    def entropy_bonus(self, dist: Any) -> dict[str, Tensor]:
        """``loss_entropy`` = −ent_coef · mean(H[π(·|s)]), or nothing at ent_coef 0: an identically zero term whose
        backward would still cost a pass through the entropy (the logged ``loss/entropy`` is then 0)."""
        return {"loss_entropy": -self.hparams.ent_coef * dist.entropy().mean()} if self.hparams.ent_coef else {}

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One gradient step on the whole batch (REINFORCE, A2C; PPO makes several)."""
        optimizer = self.optimizers()
        self.set_learning_rate(optimizer)
        return self.metric_names(self.with_diagnostics(self.policy_step(batch, optimizer), batch))

    def with_diagnostics(self, metrics: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``metrics`` plus :meth:`diagnostics` of the updated policy, for the batches whose metrics are written."""
        if self.log_due:
            metrics.update(self.diagnostics(batch))
            metrics.setdefault("loss_entropy", -self.hparams.ent_coef * metrics["entropy"])
        return metrics

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The policy's entropy on the batch and the critic's explained variance (its values at collection where
        the batch has them, else now)."""
        dist, values = self.policy(batch["obs"])
        stats = {"entropy": dist.entropy().mean()}
        if values is not None:
            stats["explained_variance"] = explained_variance(batch.get("values", values), batch["returns"])
        return stats

    def policy_step(self, batch: dict[str, Tensor], optimizer: Any) -> dict[str, Tensor]:
        """One gradient step on the sum of ``loss(batch)``'s ``loss_*`` terms; returns what ``loss`` returned."""
        losses = self.loss(batch)
        self.gradient_step(reduce(operator.add, [v for k, v in losses.items() if k.startswith("loss_")]), optimizer,
                           self.hparams.max_grad_norm)
        return losses

    def normalize_advantages(self, adv: Tensor) -> Tensor:
        """(A − mean) / (std + 1e-8) over the last dimension (each row of ``[minibatches, B]`` on its own); finite
        for a minibatch of one; under DDP the statistics are every rank's together (one all-reduce)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, correction=0, keepdim=True) + 1e-8)
        count = torch.full_like(adv[..., 0], adv.shape[-1])
        stats = torch.stack([adv.sum(-1), adv.square().sum(-1), count], -1)
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        mean = (stats[..., 0] / stats[..., 2]).unsqueeze(-1)
        var = (stats[..., 1:2] / stats[..., 2:3] - mean.square()).clamp_min(0.0)
        return (adv - mean) / (var.sqrt() + 1e-8)


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    return 1 - (returns - values).var() / returns.var().clamp_min(1e-8)
