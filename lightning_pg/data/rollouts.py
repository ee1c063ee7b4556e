"""n-step rollouts for A2C and PPO: ``n_steps`` transitions from each env, played by the current policy."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from lightning_pg.data.base import EnvIterable, EnvSettings, RewardScaler, as_tensor, cat, stack
from lightning_pg.networks import RunningMeanStd
from lightning_pg.returns import gae

if TYPE_CHECKING:
    from lightning_pg.algorithms.base import RLModule
    from lightning_pg.networks import ActorCritic
    from lightning_pg.networks.numpy_actor import NumpyActor


class TorchActor:
    """A rollout's acting through the policy module on its device: numpy observations in, tensors out.

    ``act(obs) -> (x, actions, log_probs, values)``: ``x`` is the observation as the networks saw it
    (normalized, the running statistics updated), the rest comes from ``policy.act(x)``; ``value(obs)`` is
    V of raw observations with the statistics left as they are. :class:`NumpyActor` has the same two methods.
    ``sde_sample_freq`` (gSDE policies): draw new exploration matrices at the first step, and every that many
    steps when > 0 (SB3's schedule); None: the policy holds no such noise.
    """

    def __init__(self, policy: "ActorCritic", device: torch.device, sde_sample_freq: int | None = None):
        self.policy, self.device, self.sde_sample_freq, self.steps = policy, device, sde_sample_freq, 0

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        if self.sde_sample_freq is not None and (self.steps == 0 or (
                self.sde_sample_freq > 0 and self.steps % self.sde_sample_freq == 0)):
            self.policy.reset_noise(len(obs))  # gSDE: new exploration matrices per rollout, or every k steps
        self.steps += 1
        x = self.policy.observe(as_tensor(obs).to(self.device))
        return x, *self.policy.act(x)

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> Tensor:
        return self.policy.value(self.policy.normalize(as_tensor(obs).to(self.device)))


class RolloutIterable(EnvIterable):
    """Each batch continues where the last one stopped (the envs are not reset between rollouts).

    Per step the actor (made per rollout by ``actor()``: a :class:`TorchActor` or a ``NumpyActor``) samples an
    action and gives its log-prob and V(s_t); after the last step one more value pass gives V(s_T) and V of
    the true final observations of time-limit cuts. Advantages and returns come from ``returns.gae``. The raw
    sampled action is stored; only the copy sent to the env is clipped. ``reward_rms``: scale rewards by the
    running std of the discounted return (None: raw rewards).

    Batch (flat over ``B = n_steps * num_envs``, time-major): ``obs [B, *obs_shape]`` (normalized as the
    policy saw them), ``actions [B, ...]``, ``log_probs [B]``, ``values [B]``, ``advantages [B]``,
    ``returns [B]``, plus ``env_steps`` and the finished episodes' returns and lengths.
    """

    def __init__(self, module: "RLModule", envs: EnvSettings, n_steps: int, gamma: float, gae_lambda: float,
                 actor: Callable[[], "TorchActor | NumpyActor"], reward_rms: RunningMeanStd | None = None):
        super().__init__(module, envs, RewardScaler(reward_rms, gamma) if reward_rms is not None else None)
        self.n_steps, self.gamma, self.gae_lambda, self.actor = n_steps, gamma, gae_lambda, actor

    def collect(self) -> dict[str, Any]:
        actor, n_steps = self.actor(), self.n_steps
        obs = self.obs if self.obs is not None else self.reset()
        num_envs = obs.shape[0]
        steps: list[tuple] = []  # (x, action, log_prob, value) per step
        rewards = np.zeros((n_steps, num_envs), np.float32)
        terminated = np.zeros((n_steps, num_envs), bool)
        dones = np.zeros((n_steps, num_envs), bool)
        cut_at, cut_obs = [], []  # (t, env) of time-limit cuts and their true final observations
        episode_returns, episode_lengths = [], []
        for t in range(n_steps):
            steps.append(actor.act(obs))
            obs, rewards[t], terminated[t], truncated, info = self.step(steps[-1][1])
            dones[t] = terminated[t] | truncated
            if dones[t].any():
                ended = np.flatnonzero(dones[t])
                cut = ended[~terminated[t][ended]]
                if len(cut):
                    cut_at += [(t, i) for i in cut]
                    cut_obs.append(self.final_obs(info, cut))
                r, n = self.episode_stats(ended)
                episode_returns.append(r)
                episode_lengths.append(n)

        xs, actions, log_probs, values = (stack([step[i] for step in steps]) for i in range(4))  # [T, num_envs, ...]
        more = actor.value(np.concatenate([obs, *cut_obs]))  # V(s_T), then V(true final obs) of the cuts
        next_values = cat([values[1:], more[None, :num_envs]])  # V(s_{t+1}); at a cut, V(final obs) instead
        if cut_at:
            t_idx, e_idx = zip(*cut_at)
            next_values[list(t_idx), list(e_idx)] = more[num_envs:]
        if isinstance(values, Tensor):  # the module's device
            rewards, terminated, dones = (torch.as_tensor(a, device=values.device)
                                          for a in (rewards, terminated, dones))
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(torch.as_tensor(rewards), dones)
            rewards = rewards if isinstance(values, Tensor) else rewards.numpy()
        advantages, returns = gae(rewards, values, next_values, terminated, dones, self.gamma, self.gae_lambda)
        batch = {"obs": xs, "actions": actions, "log_probs": log_probs, "values": values, "advantages": advantages,
                 "returns": returns}
        batch = {k: as_tensor(v.reshape(n_steps * num_envs, *v.shape[2:])) for k, v in batch.items()}
        return {
            **batch,
            "env_steps": n_steps * num_envs,
            "episode_returns": np.concatenate(episode_returns) if episode_returns else np.zeros(0),
            "episode_lengths": np.concatenate(episode_lengths) if episode_lengths else np.zeros(0),
        }

