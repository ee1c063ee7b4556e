r"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

The lecture's actor-critic slide: the critic V(s) replaces the Monte Carlo return's baseline, and the
actor follows the advantage A(s, a) ≈ G_t − V(s_t):

    ∇θ J = E[ ∇θ log πθ(a_t|s_t) · A_t ]        critic: minimize (V(s_t) − R_t)²

with G_t the n-step bootstrapped return (GAE with λ = 1 by default), updated online after every
``n_steps`` × ``num_envs`` transitions, one gradient step per rollout on

    L = mean(−log π(a|s) · Â) + vf_coef · mean((V(s) − R)²) − ent_coef · mean(H[π(·|s)]).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.on_policy import OnPolicyModule


class A2C(OnPolicyModule):
    """Advantage actor-critic with Stable-Baselines3's defaults (RMSprop, lr 7e-4, n_steps 5).

    Args:
        n_steps: steps per env between updates (>= 1); a rollout is ``n_steps * num_envs`` transitions.
        gae_lambda: GAE λ in [0, 1]; 1.0 gives the plain n-step advantage.
        normalize_advantage: standardize the advantages of each rollout.
        use_rms_prop: RMSprop (alpha 0.99, eps ``rms_prop_eps``) as in SB3; False uses Adam.
        rms_prop_eps: RMSprop's epsilon.
        **kwargs: see :class:`~lightning_pg.algorithms.on_policy.OnPolicyModule` and
            :class:`~lightning_pg.algorithms.base.RLModule` (ent_coef, vf_coef, max_grad_norm, env_id, ...).

    Differences from SB3: none intended in the maths.
    """

    def __init__(
        self,
        env_id: str,
        n_steps: int = 5,
        gae_lambda: float = 1.0,
        normalize_advantage: bool = False,
        use_rms_prop: bool = True,
        rms_prop_eps: float = 1e-5,
        learning_rate: float | str = 7e-4,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, learning_rate=learning_rate, **kwargs)
        check(isinstance(n_steps, int) and n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
        check(0.0 <= gae_lambda <= 1.0, "gae_lambda", gae_lambda, "in [0, 1]")
        check(rms_prop_eps > 0, "rms_prop_eps", rms_prop_eps, "> 0")
        self.check_rollout(n_steps)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        dist, values = self.policy(batch["obs"])                                # π(·|s), V(s)
        advantages = batch["advantages"]                                        # Â = GAE(λ), λ = 1: R − V(s)
        if self.hparams.normalize_advantage:
            advantages = self.normalize_advantages(advantages)
        return {
            "loss_policy": -(dist.log_prob(batch["actions"]) * advantages).mean(),  # actor: −log π(a|s) · Â
            "loss_value": self.value_loss(values, batch),                           # critic: vf_coef · (V − R)²
            **self.entropy_bonus(dist),                                             # −ent_coef · H[π(·|s)]
        }

    def configure_optimizers(self) -> Any:
        lr = self.scheduled(self.hparams.learning_rate)
        if self.hparams.use_rms_prop:
            params = self.optimized_parameters()
            # one flat tensor (see contiguous) has nothing for a multi-tensor kernel to batch: skip torch's choice
            return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=self.hparams.rms_prop_eps,
                                       foreach=False if len(params) == 1 else None)
        return self.adam(self.optimized_parameters(), lr)

