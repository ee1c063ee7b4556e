r"""SAC: Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290 and
https://arxiv.org/abs/1812.05905 for the learned temperature).

Maximum-entropy RL: maximize E[Σ γ^t (r_t + α H(π(·|s_t)))]. Like TD3 it learns twin critics from replay with a
min target; unlike DDPG/TD3 the actor is a stochastic tanh-squashed Gaussian, and the entropy bonus does the
exploring:

    critic:       minimize (Q_i(s,a) − y)²,  y = r + γ (1 − terminated) [min_i Q'_i(s', a') − α log π(a'|s')],  a' ~ π(·|s')
    actor:        minimize E_{a~π}[α log π(a|s) − min_i Q_i(s, a)]        (reparameterized a = tanh(μ + σ ε))
    temperature:  minimize −log α · (log π(a|s) + H̄),  H̄ = −|A|  (drives the entropy toward H̄)
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.off_policy import OffPolicyModule
from lightning_pg.networks import QCritics, TanhGaussianActor, frozen_copy, no_weight_grads, polyak_update
from lightning_pg.networks.encoders import ACTIVATIONS


class SAC(OffPolicyModule):
    r"""SAC for Box action spaces, with Stable-Baselines3's defaults.

    One gradient step on a minibatch (``train_step``): critics, then actor and temperature, then targets.
    Logs ``loss/q``, ``loss/policy``, ``loss/alpha`` (learned temperature only), ``sac/alpha``, ``sac/entropy``.

    Args:
        ent_coef: the temperature α: ``"auto"`` learns it starting from 1, ``"auto_0.1"`` from 0.1, a number
            fixes it (SB3's name and convention).
        target_entropy: H̄ for the learned α: ``"auto"`` is −|A| (minus the action dimension), or a number.
        target_update_interval: critic updates per Polyak update of the target critics (1).
        activation: hidden activation of the actor and critic MLPs (relu, tanh, elu, gelu, silu).
        learning_rate: Adam step size of the actor, the critics and α (3e-4), or ``"lin_X"`` (linear decay).
        network: hidden sizes of the actor and each critic (default [256, 256]).
        **kwargs: the replay settings of :class:`~lightning_pg.algorithms.off_policy.OffPolicyModule`
            (buffer_size, learning_starts, batch_size, tau, train_freq, gradient_steps) and the shared ones.

    Differences from the reference: no separate value network (the 2018 v2 algorithm, like SB3 and Spinning
    Up); the squashed log-prob uses the exact log(1 − tanh²u) = 2(log 2 − u − softplus(−2u)) instead of SB3's
    log(1 − a² + 1e-6), which is finite at saturated actions without the bias of the epsilon; the critics'
    weights are frozen in the actor's step (only dQ/da is needed; same gradients for the actor).
    """

    def __init__(
        self,
        env_id: str,
        ent_coef: float | str = "auto",
        target_entropy: float | str = "auto",
        target_update_interval: int = 1,
        activation: str = "relu",
        learning_rate: float | str = 3e-4,
        network: list[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, learning_rate=learning_rate, network=network or [256, 256], **kwargs)
        learned = isinstance(ent_coef, str)
        check(not learned or ent_coef == "auto" or ent_coef.startswith("auto_"), "ent_coef", ent_coef,
              "'auto', 'auto_<initial value>' or a number > 0")
        initial = float(ent_coef[5:]) if learned and ent_coef != "auto" else (1.0 if learned else ent_coef)
        check(initial > 0, "ent_coef", ent_coef, "> 0 ('auto_<initial value>' with an initial value > 0)")
        check(target_entropy == "auto" or isinstance(target_entropy, (int, float)), "target_entropy", target_entropy,
              "'auto' or a number")
        check(target_update_interval >= 1, "target_update_interval", target_update_interval, "an integer >= 1")
        check(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(ACTIVATIONS)}")
        self.actor = TanhGaussianActor(self.raw_observation_space, self.act_dim, self.network, activation)
        self.critic = QCritics(self.raw_observation_space, self.act_dim, self.network, 2, activation)
        self.critic_target = frozen_copy(self.critic)
        self.log_ent_coef = nn.Parameter(torch.tensor(math.log(initial)), requires_grad=learned)  # log α
        self.target_entropy = -float(self.act_dim) if target_entropy == "auto" else float(target_entropy)

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        dist = self.actor(obs)
        return dist.mode() if deterministic else dist.sample()

    def train_step(self, b: dict[str, Tensor], optimizers: list[Any]) -> dict[str, Tensor]:
        actor_optimizer, critic_optimizer = optimizers
        self.num_updates += 1
        actions_pi, log_prob = self.actor(b["obs"]).rsample()            # a ~ π(·|s), reparameterized
        alpha = self.log_ent_coef.detach().exp()                          # α before this step's update
        out = {"alpha": alpha, "entropy": -log_prob.detach().mean()}
        with torch.no_grad():                                             # soft value of s' under the current π
            next_actions, next_log_prob = self.actor(b["next_obs"]).rsample()
            next_v = self.critic_target(b["next_obs"], next_actions).min(0).values - alpha * next_log_prob
            y = self.td_target(b, next_v)                                 # y = r + γ (1 − terminated) V(s')
        q = self.critic(b["obs"], b["actions"])                           # [2, B]
        out["loss_q"] = 0.5 * (q - y).square().mean(1).sum()             # critics: minimize (Q_i(s,a) − y)²
        self.gradient_step(out["loss_q"], critic_optimizer)
        with no_weight_grads(self.critic):                                # actor: maximize min Q − α log π
            out["loss_policy"] = (alpha * log_prob - self.critic(b["obs"], actions_pi).min(0).values).mean()
            loss = out["loss_policy"]
            if self.log_ent_coef.requires_grad:                           # temperature: entropy toward H̄
                out["loss_alpha"] = -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()
                loss = loss + out["loss_alpha"]  # α has its own Adam state in the actor's optimizer (see below)
            self.gradient_step(loss, actor_optimizer)
        if self.num_updates % self.hparams.target_update_interval == 0:
            polyak_update(self.critic_target, self.critic, self.hparams.tau)
        return out

    def configure_optimizers(self) -> Any:
        # log α steps in the actor's optimizer: its loss reads only the detached log π, so the result is that of
        # SB3's separate Adam stepped first (the target and the actor loss use the α from before the step either
        # way), with one backward and one optimizer step fewer per update
        lr = self.scheduled(self.hparams.learning_rate)
        log_alpha = [self.log_ent_coef] if self.log_ent_coef.requires_grad else []
        actor, critic = self.optimized_parameters(self.actor) + log_alpha, self.optimized_parameters(self.critic)
        return [self.adam(actor, lr), self.adam(critic, lr)]
