r"""PPO: proximal policy optimization with the clipped surrogate (Schulman et al. 2017, https://arxiv.org/abs/1707.06347).

Reuse each rollout for several epochs of minibatch steps without letting the policy move too far from the
one that collected it: with the probability ratio r_t(θ) = πθ(a_t|s_t) / π_old(a_t|s_t),

    L^CLIP(θ) = E[ min( r_t(θ) Â_t,  clip(r_t(θ), 1 − ε, 1 + ε) Â_t ) ]

maximized together with a value regression and an entropy bonus. Â_t is GAE(λ) from the rollout.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.on_policy import OnPolicyModule, explained_variance
from lightning_pg.data.rollouts import RolloutIterable
from lightning_pg.schedules import ScheduleSpec, parse_schedule


class PPO(OnPolicyModule):
    """PPO-Clip with Stable-Baselines3's defaults and names (so RL Zoo settings carry over one to one).

    Args:
        n_steps: steps per env per rollout (>= 1); a rollout is ``n_steps * num_envs`` transitions.
        batch_size: minibatch size; must divide ``n_steps * num_envs``.
        n_epochs: passes over each rollout (>= 1). Each rollout makes exactly
            ``n_epochs * n_steps * num_envs / batch_size`` gradient steps (fewer only with ``target_kl``).
        gae_lambda: GAE λ in [0, 1] (0.9 to 0.99 typical).
        clip_range: ε of the clipped ratio, a value or ``"lin_X"`` (0.1 to 0.3 typical).
        clip_range_vf: clip the value change around the old value by this (None: no value clipping).
        normalize_advantage: standardize Â per minibatch (finite for a minibatch of one).
        target_kl: stop the rollout's epochs early once the approximate KL exceeds 1.5 × this (None: off).
        **kwargs: see :class:`~lightning_pg.algorithms.on_policy.OnPolicyModule` and
            :class:`~lightning_pg.algorithms.base.RLModule`.

    Logged: ``loss/policy``, ``loss/value``, ``loss/entropy`` (means over the update's minibatches), and
    after the update, on the whole rollout: ``ppo/approx_kl`` and ``ppo/clip_fraction`` (how far the new
    policy is from the one that collected the data), ``ppo/entropy``, ``ppo/explained_variance`` (these
    only for the rollouts whose metrics are written, one every ``log_every`` env steps).

    Differences from SB3: values are computed in one batched pass after the rollout rather than per step
    (same numbers); a minibatch equal to the whole rollout skips the shuffle (same gradient); approx_kl and
    clip_fraction are measured once after the update instead of averaged over minibatches; with
    ``target_kl`` the KL check costs one extra forward per minibatch; a ``batch_size`` that does not
    divide the rollout is an error instead of a warning and a short last batch.
    """

    def __init__(
        self,
        env_id: str,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gae_lambda: float = 0.95,
        clip_range: ScheduleSpec = 0.2,
        clip_range_vf: ScheduleSpec | None = None,
        normalize_advantage: bool = True,
        target_kl: float | None = None,
        learning_rate: ScheduleSpec = 3e-4,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, learning_rate=learning_rate, **kwargs)
        rollout = n_steps * self.hparams.num_envs if isinstance(n_steps, int) else 0
        check(isinstance(n_steps, int) and n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
        check(isinstance(batch_size, int) and 1 <= batch_size <= rollout, "batch_size", batch_size,
              f"an integer from 1 to the rollout size n_steps * num_envs = {rollout}")
        check(rollout % batch_size == 0, "batch_size", batch_size,
              f"a divisor of the rollout size n_steps * num_envs = {rollout}, so every minibatch is full "
              f"(e.g. {max(d for d in range(1, min(batch_size, rollout) + 1) if rollout % d == 0)})")
        check(isinstance(n_epochs, int) and n_epochs >= 1, "n_epochs", n_epochs, "an integer >= 1")
        check(0.0 <= gae_lambda <= 1.0, "gae_lambda", gae_lambda, "in [0, 1]")
        for name, spec in (("clip_range", clip_range), ("clip_range_vf", clip_range_vf)):
            schedule = parse_schedule(spec) if spec is not None else None
            ok = (spec is None and name == "clip_range_vf") or (schedule is not None and schedule(1.0) > 0)
            check(ok, name, spec, "> 0, or a schedule such as 'lin_0.2'" + (", or null" if spec is None else ""))
        check(target_kl is None or target_kl > 0, "target_kl", target_kl, "> 0 or null")

    def make_data(self) -> RolloutIterable:
        return RolloutIterable(self, self.hparams.n_steps)

    def loss(self, mb: dict[str, Tensor], clip: float, clip_vf: float | None) -> dict[str, Tensor]:
        """The clipped surrogate, value and entropy terms on a minibatch whose advantages are normalized."""
        return self.loss_terms(mb, self.policy.dist(mb["obs"]), self.policy.value(mb["obs"]), clip, clip_vf)[0]

    def loss_terms(
        self, mb: dict[str, Tensor], dist: Any, values: Tensor, clip: float, clip_vf: float | None
    ) -> tuple[dict[str, Tensor], tuple]:
        """The loss terms from the policy's ``dist`` and ``values`` on ``mb["obs"]``, and their derivatives per
        sample (dL/dlog π(a|s), dL/dV(s), dL/dH) for the by-hand backward (see OnPolicyModule.policy_step)."""
        ratio = torch.exp(dist.log_prob(mb["actions"]) - mb["log_probs"])  # r_t(θ) = π(a|s) / π_old(a|s)
        # min(r·Â, clip(r, 1−ε, 1+ε)·Â) is r·Â with r capped at 1+ε where Â > 0 and floored at 1−ε where
        # Â < 0: one clamp to per-sample bounds (set with the minibatch) instead of two products and a min;
        # the same values and gradients, four graph nodes fewer per minibatch (~10% of a CartPole update)
        advantages = mb["advantages"]
        low, high = (mb["ratio_low"], mb["ratio_high"]) if "ratio_low" in mb else ratio_bounds(advantages, clip)
        clipped = ratio.clamp(low, high)
        with torch.no_grad():  # dL/dlog π = −r·Â/n where r is inside its bounds (dr/dlog π = r), 0 where clipped
            d_log_prob = torch.where(clipped == ratio, ratio * advantages, 0.0) * (-1.0 / len(ratio))
        loss_value, d_value = self.value_loss(values, mb, clip_vf)
        losses = {}
        if self.losses_due:  # (the by-hand update needs only the derivatives returned below)
            losses = {"loss_policy": -(clipped * advantages).mean(), "loss_value": loss_value}
        return losses, (d_log_prob, d_value, self.entropy_bonus(losses, dist))

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, Tensor], clip: float) -> dict[str, Tensor]:
        """How far the update moved the policy, on the whole rollout (one forward, not one per minibatch)."""
        dist = self.policy.dist(batch["obs"])
        log_ratio = dist.log_prob(batch["actions"]) - batch["log_probs"]
        ratio = log_ratio.exp()
        return {
            "approx_kl": (ratio - 1 - log_ratio).mean(),  # Schulman's low-variance estimator of KL(old‖new)
            "clip_fraction": ((ratio - 1).abs() > clip).float().mean(),
            "entropy": dist.entropy().mean(),
            "explained_variance": explained_variance(batch["values"], batch["returns"]),
        }

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        optimizer = self.optimizers()
        lr = self.set_learning_rate(optimizer)
        clip = self.scheduled(self.hparams.clip_range)
        clip_vf = None if self.hparams.clip_range_vf is None else self.scheduled(self.hparams.clip_range_vf)
        target_kl, history = self.hparams.target_kl, []
        for mb in self.minibatches(batch, clip):
            if target_kl is not None and self.diagnostics(mb, clip)["approx_kl"] > 1.5 * target_kl:
                break  # early stop: the policy moved too far from the one that collected the data (as SB3)
            history.append(self.policy_step(mb, optimizer, clip=clip, clip_vf=clip_vf))
        metrics = {k: torch.stack([h[k].detach() for h in history]).mean() for k in history[0]} if history else {}
        if not self.log_due:
            return self.metric_names(metrics)  # the gradient norms (or losses): enough for the finiteness check
        metrics.update(self.diagnostics(batch, clip))
        metrics.setdefault("loss_entropy", -self.hparams.ent_coef * metrics["entropy"])
        named = self.metric_names(metrics)
        named["ppo/learning_rate"], named["ppo/clip_range"] = torch.tensor(lr), torch.tensor(clip)
        return named

    def minibatches(self, batch: dict[str, Tensor], clip: float | None = None) -> Iterator[dict[str, Tensor]]:
        """``n_epochs`` passes over the rollout in shuffled minibatches, advantages normalized per minibatch,
        with the ratio's clipping bounds per sample for ``clip`` (default: the scheduled clip range) as
        ``ratio_low`` and ``ratio_high`` (see :meth:`loss_terms`).

        A minibatch that is the whole rollout (the CartPole zoo setting) needs no shuffle (same gradient),
        no copies, and its advantages and bounds computed only once.
        """
        size, batch_size = len(batch["obs"]), self.hparams.batch_size
        clip = self.scheduled(self.hparams.clip_range) if clip is None else clip
        keys = ("obs", "actions", "log_probs", "values", "advantages", "returns")
        whole = None
        for _ in range(self.hparams.n_epochs):
            if batch_size == size:
                whole = whole or self._with_bounds({**batch, "advantages": self._advantages(batch["advantages"])}, clip)
                yield whole
                continue
            order = torch.randperm(size, device=self.device)
            for start in range(0, size, batch_size):
                mb = {k: batch[k][order[start : start + batch_size]] for k in keys}
                mb["advantages"] = self._advantages(mb["advantages"])
                yield self._with_bounds(mb, clip)

    @staticmethod
    def _with_bounds(mb: dict[str, Tensor], clip: float) -> dict[str, Tensor]:
        mb["ratio_low"], mb["ratio_high"] = ratio_bounds(mb["advantages"], clip)
        return mb

    def _advantages(self, advantages: Tensor) -> Tensor:
        return self.normalize_advantages(advantages) if self.hparams.normalize_advantage else advantages

    def configure_optimizers(self) -> Any:
        # eps 1e-5: Stable-Baselines3's Adam setting for PPO
        return self.adam(self.optimized_parameters(), self.scheduled(self.hparams.learning_rate), eps=1e-5)


def ratio_bounds(advantages: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """Per-sample bounds of r in PPO's clipped surrogate: where Â > 0, r may fall freely but rise only to 1+ε;
    where Â <= 0, the reverse."""
    positive = advantages > 0
    return torch.where(positive, 0.0, 1.0 - clip), torch.where(positive, 1.0 + clip, torch.inf)
