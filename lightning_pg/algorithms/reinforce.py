r"""REINFORCE: Monte Carlo policy gradient (Williams, 1992), optionally with a learned baseline V(s).

The lecture's slide, line for line:

    ∇θ J(θ) = E[ Σ_t ∇θ log πθ(a_t|s_t) · (G_t − b(s_t)) ],    G_t = Σ_k γ^k r_{t+k}

Play whole episodes with the current policy, weight each action's log-probability by the return that
followed it, and step uphill. A baseline b(s) = V(s) (fitted to G by regression) leaves the gradient
unbiased and lowers its variance; ``baseline="none"`` is the plain algorithm.
"""
from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.on_policy import OnPolicyModule
from lightning_pg.data import EpisodeIterable


class REINFORCE(OnPolicyModule):
    r"""REINFORCE with reward-to-go, for discrete and continuous actions.

    Loss per batch of complete episodes (mean over its L steps):

    - policy:  ``-(log_prob * (G - b)).mean()``  with b = V(s) detached, or 0 without a baseline
    - value:   ``vf_coef * ((V(s) - G)^2).mean()``  (baseline="value" only)
    - entropy: ``-ent_coef * H[π(·|s)].mean()``

    Args:
        baseline: ``"value"`` learns V(s) and subtracts it; ``"none"`` is plain REINFORCE.
        normalize_returns: standardize the weights (G − b) over the batch (mean 0, std 1); without a
            baseline this is the classic "normalized returns" trick.
        **kwargs: see :class:`~lightning_pg.algorithms.on_policy.OnPolicyModule` (ent_coef, vf_coef,
            max_grad_norm, activation, ...) and :class:`~lightning_pg.algorithms.base.RLModule`.

    Differences from the textbook: the gradient is averaged over steps rather than summed over each
    episode (a constant rescaling that Adam absorbs), and γ^t is dropped from the per-step weight, as in
    Spinning Up and Stable-Baselines3. On a time-limit cut, G bootstraps from V(final state) when there is
    a baseline; without one there is nothing to bootstrap from and the cut acts like a termination.
    """

    def __init__(
        self,
        env_id: str,
        baseline: Literal["none", "value"] = "value",
        normalize_returns: bool = False,
        num_envs: int = 8,
        learning_rate: float | str = 1e-3,
        max_grad_norm: float | None = None,
        **kwargs: Any,
    ):
        check(baseline in ("none", "value"), "baseline", baseline, "'none' or 'value'")
        super().__init__(env_id=env_id, num_envs=num_envs, learning_rate=learning_rate,
                         max_grad_norm=max_grad_norm, **kwargs)

    @property
    def uses_value(self) -> bool:
        return self.hparams.baseline == "value"

    def make_data(self) -> EpisodeIterable:
        return EpisodeIterable(self, self.env_settings, self.hparams.gamma, self.rollout_actor, self.ret_rms)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        obs, actions, returns = batch["obs"], batch["actions"], batch["returns"]
        dist, value = self.policy(obs)                       # π(·|s), and V(s) when there is a baseline
        baseline = 0.0 if value is None else value.detach()  # b(s): the gradient stays unbiased
        weight = returns - baseline                           # G_t − b(s_t)
        if self.hparams.normalize_returns and weight.numel() > 1:
            weight = (weight - weight.mean()) / (weight.std() + 1e-8)
        losses = {"loss_policy": -(dist.log_prob(actions) * weight).mean()}  # the policy gradient theorem
        if value is not None:  # the baseline's own regression onto G
            losses["loss_value"] = self.value_loss(value, batch)
        return {**losses, **self.entropy_bonus(dist)}

    def configure_optimizers(self) -> Any:
        return self.adam(self.optimized_parameters(), self.scheduled(self.hparams.learning_rate))
