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

    Differences from SB3: a minibatch equal to the whole rollout skips the shuffle (same gradient); approx_kl and
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
        self.check_rollout(n_steps)

    def loss(self, mb: dict[str, Tensor]) -> dict[str, Tensor]:
        """The clipped surrogate, value and entropy terms on a minibatch whose advantages are normalized."""
        dist, values = self.policy(mb["obs"])                                      # π(·|s), V(s)
        ratio = torch.exp(dist.log_prob(mb["actions"]) - mb["log_probs"])         # r(θ) = π(a|s) / π_old(a|s)
        adv, eps = mb["advantages"], self.scheduled(self.hparams.clip_range)       # Â, ε
        if self.hparams.clip_range_vf is not None:  # keep V within ε_vf of the value at collection (SB3's option)
            eps_vf = self.scheduled(self.hparams.clip_range_vf)
            values = mb["values"] + (values - mb["values"]).clamp(-eps_vf, eps_vf)
        return {
            "loss_policy": -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean(),  # −L^CLIP
            "loss_value": self.value_loss(values, mb),                                           # vf_coef · (V − R)²
            **self.entropy_bonus(dist),                                                          # −ent_coef · H
        }

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """How far the update moved the policy, on the whole rollout (one forward, not one per minibatch)."""
        dist, _ = self.policy(batch["obs"])
        log_ratio = dist.log_prob(batch["actions"]) - batch["log_probs"]
        ratio = log_ratio.exp()
        return {
            "approx_kl": (ratio - 1 - log_ratio).mean(),  # Schulman's low-variance estimator of KL(old‖new)
            "clip_fraction": ((ratio - 1).abs() > self.scheduled(self.hparams.clip_range)).float().mean(),
            "entropy": dist.entropy().mean(),
            "explained_variance": explained_variance(batch["values"], batch["returns"]),
        }

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        optimizer = self.optimizers()
        lr = self.set_learning_rate(optimizer)
        target_kl, history = self.hparams.target_kl, []
        for mb in self.minibatches(batch):
            if target_kl is not None and self._approx_kl(mb) > 1.5 * target_kl:
                break  # early stop: the policy moved too far from the one that collected the data (as SB3)
            history.append(self.policy_step(mb, optimizer))
        metrics = {k: torch.stack([h[k].detach() for h in history]).mean() for k in history[0]} if history else {}
        if self.log_due:
            clip = self.scheduled(self.hparams.clip_range)
            metrics.update(learning_rate=torch.tensor(lr), clip_range=torch.tensor(clip))
        return self.metric_names(self.with_diagnostics(metrics, batch))

    def _approx_kl(self, mb: dict[str, Tensor]) -> float:
        """The approximate KL on a minibatch, averaged over ranks under DDP (every rank stops at the same step)."""
        return float(self.mean_over_ranks(self.diagnostics(mb)["approx_kl"]))

    def minibatches(self, batch: dict[str, Tensor]) -> Iterator[dict[str, Tensor]]:
        """``n_epochs`` passes over the rollout in shuffled minibatches, advantages normalized per minibatch.

        Each epoch shuffles every field with one gather and normalizes every minibatch's advantages in one pass
        (rows of a [minibatches, batch_size] view); the minibatches are then slices. A minibatch that is the
        whole rollout (the CartPole zoo setting) needs no shuffle (same gradient) and is prepared once.
        """
        size, batch_size = len(batch["obs"]), self.hparams.batch_size
        keys = ("obs", "actions", "log_probs", "values", "advantages", "returns")
        if batch_size == size:
            whole = {**batch, "advantages": self._advantages(batch["advantages"])}
            yield from (whole for _ in range(self.hparams.n_epochs))
            return
        for _ in range(self.hparams.n_epochs):
            order = torch.randperm(size, device=self.device)
            shuffled = {k: batch[k][order] for k in keys}
            advantages = self._advantages(shuffled["advantages"].view(-1, batch_size))
            for i, start in enumerate(range(0, size, batch_size)):
                yield {**{k: v[start : start + batch_size] for k, v in shuffled.items()}, "advantages": advantages[i]}

    def _advantages(self, advantages: Tensor) -> Tensor:
        return self.normalize_advantages(advantages) if self.hparams.normalize_advantage else advantages

    def configure_optimizers(self) -> Any:
        # eps 1e-5: Stable-Baselines3's Adam setting for PPO
        return self.adam(self.optimized_parameters(), self.scheduled(self.hparams.learning_rate), eps=1e-5)

