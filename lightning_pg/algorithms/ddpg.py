r"""DDPG: Deep Deterministic Policy Gradient (Lillicrap et al. 2015, https://arxiv.org/abs/1509.02971).

The lecture's slide, line for line:

    critic:  minimize  (Q(s,a) − (r + γ Q'(s', μ'(s'))))²      on replayed transitions (s, a, r, s')
    actor:   maximize  Q(s, μ(s))                              ∇θ J ≈ ∇a Q(s,a)|a=μ(s) · ∇θ μ(s)

A deterministic actor a = μ(s), explored with added noise (a = μ(s) + noise), a replay buffer, and target
networks Q', μ' that trail the learned ones by Polyak averaging.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.off_policy import OffPolicyModule
from lightning_pg.networks import (
    DeterministicActor,
    QCritics,
    frozen_copy,
    no_weight_grads,
    polyak_update,
)
from lightning_pg.networks.encoders import ACTIVATIONS
from lightning_pg.noise import NOISES


class DDPG(OffPolicyModule):
    r"""DDPG for Box action spaces, with Stable-Baselines3's defaults (its DDPG is TD3 without the tricks).

    One gradient step on a minibatch (``train_step``):

    - critic: ``((Q(s,a) - y)^2).mean()`` with ``y = r + γ (1 − terminated) Q'(s', μ'(s'))`` (no gradient)
    - actor:  ``-Q(s, μ(s)).mean()`` through the critic, whose weights are frozen for this step
    - targets: θ' ← (1 − τ) θ' + τ θ for the actor and the critic

    Args:
        action_noise: exploration noise added to μ(s) while collecting: ``"normal"`` (Gaussian),
            ``"ornstein-uhlenbeck"`` (temporally correlated, the paper's), or null for none.
        noise_std: its σ in the [-1, 1] action scale (RL Zoo's ``noise_std``), typically 0.1 to 0.3.
        activation: hidden activation of the actor and critic MLPs (relu, tanh, elu, gelu, silu).
        learning_rate: Adam step size of the actor and the critic, or ``"lin_X"`` (linear decay).
        network: hidden sizes of the actor and the critic (default [400, 300], the TD3 paper's).
        **kwargs: the replay settings of :class:`~lightning_pg.algorithms.off_policy.OffPolicyModule`
            (buffer_size, learning_starts, batch_size, tau, train_freq, gradient_steps) and the shared ones
            (env_id, gamma, total_timesteps, ...).

    Differences from the paper: no batch normalization or critic weight decay, the action enters the critic
    at its input (an MLP over [s, a]) rather than at its second layer, and the defaults are Stable-Baselines3's
    (one lr 1e-3, batch 256, τ = 0.005, Gaussian noise σ = 0.1) rather than the paper's (actor lr 1e-4,
    batch 64, τ = 0.001, OU noise σ = 0.2). ``act()`` is always μ(s): noise is added only to collect data.
    """

    n_critics = 1  # TD3: 2
    policy_delay = 1  # TD3: a hyperparameter

    def __init__(
        self,
        env_id: str,
        action_noise: Literal["normal", "ornstein-uhlenbeck"] | None = "normal",
        noise_std: float = 0.1,
        activation: str = "relu",
        learning_rate: float | str = 1e-3,
        network: list[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, learning_rate=learning_rate, network=network or [400, 300], **kwargs)
        check(action_noise in (None, *NOISES), "action_noise", action_noise, f"one of {sorted(NOISES)} or null")
        check(noise_std >= 0, "noise_std", noise_std, ">= 0")
        check(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(ACTIVATIONS)}")
        obs_space, act_dim = self.raw_observation_space, self.act_dim
        self.actor = DeterministicActor(obs_space, act_dim, self.network, activation)
        self.critic = QCritics(obs_space, act_dim, self.network, self.n_critics, activation)
        self.actor_target, self.critic_target = frozen_copy(self.actor), frozen_copy(self.critic)
        self.noise = NOISES[action_noise](self.hparams.num_envs, act_dim, noise_std) if action_noise else None

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.actor(obs)  # a deterministic policy either way; exploration noise is added by explore()

    def explore(self, obs: Tensor) -> Tensor:
        """a = μ(s) + noise, clipped to [-1, 1] (used only to collect data)."""
        actions = self.actor(obs)
        return actions if self.noise is None else (actions + self.noise.sample().to(actions)).clamp(-1.0, 1.0)

    def episodes_ended(self, envs: np.ndarray) -> None:
        if self.noise is not None:
            self.noise.reset(envs)

    def target_actions(self, next_obs: Tensor) -> Tensor:
        """μ'(s'), the target actor's action (TD3 smooths it)."""
        return self.actor_target(next_obs)

    def train_step(self, b: dict[str, Tensor], optimizers: list[Any]) -> dict[str, Tensor]:
        actor_optimizer, critic_optimizer = optimizers
        self.num_updates += 1
        with torch.no_grad():  # Q'(s', μ'(s')); with twin critics (TD3) the smaller of the two
            next_q = self.critic_target(b["next_obs"], self.target_actions(b["next_obs"])).min(0).values
            y = self.td_target(b, next_q)                            # y = r + γ (1 − terminated) Q'(s', μ'(s'))
        q = self.critic(b["obs"], b["actions"])                      # [n_critics, B]
        out = {"loss_q": (q - y).square().mean(1).sum(), "q": q.detach().mean()}  # critic: minimize (Q(s,a) − y)²
        self.gradient_step(out["loss_q"], critic_optimizer)
        if self.num_updates % self.policy_delay == 0:
            with no_weight_grads(self.critic):
                # actor: maximize Q1(s, μ(s)) (Q1 alone: the twin critic plays no part in it)
                out["loss_policy"] = -self.critic.member(b["obs"], self.actor(b["obs"]), 0).mean()
                self.gradient_step(out["loss_policy"], actor_optimizer)
            polyak_update(self.actor_target, self.actor, self.hparams.tau)  # θ' ← (1 − τ) θ' + τ θ
            polyak_update(self.critic_target, self.critic, self.hparams.tau)
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.noise is not None:  # each rank's own process
            checkpoint["off_policy"]["noise"] = self.gather_ranks(self.noise.state_dict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.noise is not None and "noise" in checkpoint["off_policy"]:
            found, noise = self.own_rank(checkpoint["off_policy"]["noise"])
            if not found or not self.noise.load_state_dict(noise):
                rank_zero_warn("The checkpoint's exploration noise is for another num_envs or number of processes: it "
                               "restarts at 0.")

    def configure_optimizers(self) -> Any:
        lr = self.scheduled(self.hparams.learning_rate)
        return [self.adam(self.optimized_parameters(module), lr) for module in (self.actor, self.critic)]
