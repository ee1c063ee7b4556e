"""The on-policy family (REINFORCE, A2C, PPO): a stochastic policy π(a|s) with a value V(s), trained only
on data played by the current policy, with the options Stable-Baselines3 users expect (orthogonal init,
state-independent log-std, observation and reward normalization, linear schedules)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_pg.algorithms.base import RLModule, check
from lightning_pg.networks import ActorCritic, RunningMeanStd
from lightning_pg.networks.encoders import ACTIVATIONS


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
        **kwargs: the shared arguments of :class:`~lightning_pg.algorithms.base.RLModule`; here
            ``learning_rate`` may be a schedule, e.g. ``"lin_1e-3"``.
    """

    uses_value = True  # whether the algorithm learns V(s) (REINFORCE without a baseline does not)
    backward_by_hand = True  # where possible (see policy_step); False forces autograd (tests compare the two)

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
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, **kwargs)
        check(ent_coef >= 0, "ent_coef", ent_coef, ">= 0")
        check(vf_coef >= 0, "vf_coef", vf_coef, ">= 0")
        check(max_grad_norm is None or max_grad_norm > 0, "max_grad_norm", max_grad_norm, "> 0 or null")
        check(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(ACTIVATIONS)}")
        self.policy = ActorCritic(
            self.observation_space, self.action_space, self.network, activation, with_value=self.uses_value,
            ortho_init=ortho_init, log_std_init=log_std_init, normalize_obs=normalize_obs,
        )
        self.ret_rms = RunningMeanStd(()) if normalize_reward else None
        self._by_hand = False  # decided in on_train_start
        self.acts_in_numpy = False  # likewise

    # ---- acting -----------------------------------------------------------------------------------------
    def observe(self, obs: Tensor) -> Tensor:
        """New observations from training envs: update the running statistics, return them normalized."""
        if self.policy.obs_rms is not None:
            self.policy.obs_rms.update(obs)
        return self.policy.normalize(obs)

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        dist = self.policy.dist(self.policy.normalize(obs))
        return dist.mode() if deterministic else dist.sample()

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic policy as an exportable function: raw observations -> env actions."""
        action = self.policy.dist(self.policy.normalize(obs)).mode()
        if self.action_low is not None:
            action = torch.maximum(torch.minimum(action, self.action_high), self.action_low)
        return action

    def bootstrap_value(self, x: Tensor) -> Tensor:
        """V(x) of normalized observations, or zeros when the algorithm learns no value."""
        if not self.uses_value:
            return x.new_zeros(x.shape[0])
        return self.policy.value(x)

    # ---- training ---------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``loss_*`` terms (summed into the objective) and detached stats; see each algorithm."""
        raise NotImplementedError

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One gradient step on the whole batch (REINFORCE, A2C; PPO makes several)."""
        optimizer = self.optimizers()
        self.set_learning_rate(optimizer)
        return self.metric_names(self.policy_step(batch, optimizer))

    def on_train_start(self) -> None:
        super().on_train_start()
        params = [p for optimizer in self.trainer.optimizers for group in optimizer.param_groups for p in group["params"]]
        self._by_hand = (  # the by-hand backward writes into the .grad views of one flat parameter (see contiguous)
            self.backward_by_hand and self._direct_steps and str(self.trainer.precision) in ("32", "32-true")
            and self.policy.has_backward_by_hand and self._loss_terms_match_loss()
            and len(params) == 1 and hasattr(params[0], "grad_views")
        )
        # rollouts act through numpy where the same conditions hold on the CPU (ActorCritic.numpy_actor)
        self.acts_in_numpy = self._by_hand and self.policy.obs_rms is None and self.device.type == "cpu"

    def _loss_terms_match_loss(self) -> bool:
        """Whether ``loss_terms`` (with derivatives) describes ``loss``: a subclass that overrides ``loss`` alone
        (a research variant of the objective) gets autograd, so its change is never silently bypassed."""
        owner = next((cls for cls in type(self).__mro__ if "loss_terms" in vars(cls)), None)
        return owner is not None and type(self).loss is owner.loss

    @property
    def losses_due(self) -> bool:
        """Whether ``loss_terms`` computes the losses' values. The autograd update needs them (they are its
        objective); the by-hand one needs only their derivatives, so it computes them just for the batches
        whose metrics are logged, and the finiteness check reads every step's gradient norm instead."""
        return self.log_due or not self._by_hand

    def policy_step(self, batch: dict[str, Tensor], optimizer: Any, **loss_kwargs: Any) -> dict[str, Tensor]:
        """One gradient step on the algorithm's loss for ``batch``; returns the loss terms and ``grad_norm``
        (the gradient's norm before clipping, where the step computes it).

        Where the algorithm writes its loss's derivatives out (``loss_terms``) and the networks allow it (MLP
        bodies with tanh or relu, one device, 32-bit), the forward and backward run by hand: the same
        gradients as autograd's (tested) at ~60% of the time on CartPole's small MLPs. Otherwise autograd.
        """
        if not self._by_hand:
            losses = self.loss(batch, **loss_kwargs)
            norm = self.gradient_step(total_loss(losses), optimizer, self.hparams.max_grad_norm)
        else:
            dist, values, saved = self.policy.forward_saving(batch["obs"])
            losses, (d_log_prob, d_value, d_entropy) = self.loss_terms(batch, dist, values, **loss_kwargs)

            def write_gradients() -> None:
                self.policy.backward_by_hand(dist, saved, batch["actions"], d_log_prob, d_value, d_entropy)

            norm = self.gradient_step(write_gradients, optimizer, self.hparams.max_grad_norm)
        if norm is not None:
            losses["grad_norm"] = norm
        return losses

    def value_loss(
        self, values: Tensor, batch: dict[str, Tensor], clip_vf: float | None = None
    ) -> tuple[Tensor | None, Tensor]:
        """vf_coef · mean((V − R)²) (None when not ``losses_due``) and its derivative dL/dV per sample. With
        ``clip_vf``, V is first kept within clip_vf of the value at collection time (PPO's value clipping; no
        gradient where it was clipped)."""
        if clip_vf is not None:
            change = values - batch["values"]
            clipped = change.clamp(-clip_vf, clip_vf)
            values = batch["values"] + clipped
        error = values - batch["returns"]
        loss = self.hparams.vf_coef * error.square().mean() if self.losses_due else None
        with torch.no_grad():
            d_value = error * (2.0 * self.hparams.vf_coef / len(error))
            if clip_vf is not None:
                d_value = d_value * (clipped == change)
        return loss, d_value

    def entropy_bonus(self, losses: dict[str, Tensor], dist: Any) -> float | None:
        """Add ``loss_entropy`` = −ent_coef · mean(H) when ent_coef > 0 (at 0 it would only add graph nodes);
        returns dL/dH per sample (None without the term)."""
        if self.hparams.ent_coef <= 0:
            return None
        entropy = dist.entropy()
        if self.losses_due:
            losses["loss_entropy"] = -self.hparams.ent_coef * entropy.mean()
        return -self.hparams.ent_coef / len(entropy)

    def normalize_advantages(self, adv: Tensor) -> Tensor:
        """(A − mean) / (std + 1e-8); finite for a minibatch of one; statistics over all ranks under DDP."""
        stats = torch.stack([adv.sum(), adv.square().sum(), adv.new_tensor(float(adv.numel()))])
        if self._trainer is not None and self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        mean = stats[0] / stats[2]
        var = (stats[1] / stats[2] - mean.square()).clamp_min(0.0)
        return (adv - mean) / (var.sqrt() + 1e-8)


def total_loss(losses: dict[str, Tensor]) -> Tensor:
    """The sum of the ``loss_*`` terms that carry gradients (no leading ``0 +``: one graph node fewer)."""
    terms = [v for k, v in losses.items() if k.startswith("loss_") and v.requires_grad]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    return 1 - (returns - values).var() / returns.var().clamp_min(1e-8)
