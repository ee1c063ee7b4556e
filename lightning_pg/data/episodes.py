"""Whole episodes for REINFORCE: one complete episode from every env per batch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from lightning_pg.data.base import EnvIterable, EnvSettings, RewardScaler, as_tensor, stack
from lightning_pg.networks import RunningMeanStd
from lightning_pg.returns import discounted_returns

if TYPE_CHECKING:
    from lightning_pg.algorithms.base import RLModule
    from lightning_pg.data.rollouts import TorchActor
    from lightning_pg.networks.numpy_actor import NumpyActor


class EpisodeIterable(EnvIterable):
    """Each batch: reset every env, play until each has finished one episode, keep those episodes.

    Why reset rather than continue: REINFORCE is strictly on-policy, so an episode begun under the previous
    policy cannot be finished under this one; and keeping "the first ``k`` episodes to finish" would favour
    short episodes. An env that finishes early keeps stepping (a vector env steps all its envs) and those
    steps are discarded; they still count as env steps taken. ``actor()`` is made per batch, as for
    :class:`~lightning_pg.data.rollouts.RolloutIterable`; ``reward_rms`` likewise.

    Batch (flat over the kept steps, ``L`` in all): ``obs [L, *obs_shape]`` (normalized as the policy saw
    them), ``actions [L, ...]``, ``returns [L]`` (the reward-to-go G_t, see ``returns.discounted_returns``),
    plus ``env_steps`` and the episodes' returns and lengths. On a time-limit cut G bootstraps from V of the
    true final observation where the policy has a value (else the cut acts like a termination).
    """

    def __init__(self, module: "RLModule", envs: EnvSettings, gamma: float,
                 actor: Callable[[], "TorchActor | NumpyActor"], reward_rms: RunningMeanStd | None = None):
        super().__init__(module, envs, RewardScaler(reward_rms, gamma) if reward_rms is not None else None)
        self.gamma, self.actor = gamma, actor

    def collect(self) -> dict[str, Any]:
        actor = self.actor()
        obs = self.reset()
        if self.reward_scaler is not None:
            self.reward_scaler.discounted_return = None  # every episode starts afresh
        num_envs = obs.shape[0]
        playing = np.ones(num_envs, dtype=bool)
        rows: list[tuple] = []
        final_values = np.zeros(num_envs, np.float32)
        episode_returns, episode_lengths = [], []
        while playing.any():
            x, actions, _, values = actor.act(obs)
            obs, rewards, terminated, truncated, info = self.step(actions)
            ending = playing & (terminated | truncated)
            rows.append((x, actions, rewards, terminated, ending, playing.copy()))
            if ending.any():
                cut = np.flatnonzero(ending & truncated & ~terminated)
                if len(cut) and values is not None:
                    final_values[cut] = as_tensor(actor.value(self.final_obs(info, cut))).cpu().numpy()
                r, n = self.episode_stats(np.flatnonzero(ending))
                episode_returns.append(r)
                episode_lengths.append(n)
            playing &= ~ending

        device = self.module.device
        obs_b, actions_b = (as_tensor(stack([row[i] for row in rows])).to(device) for i in range(2))
        rewards, terminated, ends, keep = (
            torch.as_tensor(np.stack([row[i] for row in rows]), device=device) for i in range(2, 6)
        )
        next_values = ends.float() * torch.as_tensor(final_values, device=device)  # read only where a cut bootstraps
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, ends, valid=keep)
        returns = discounted_returns(rewards, next_values, terminated, ends, self.gamma)
        return {
            "obs": obs_b[keep],
            "actions": actions_b[keep],
            "returns": returns[keep],
            "env_steps": len(rows) * num_envs,
            "episode_returns": np.concatenate(episode_returns),
            "episode_lengths": np.concatenate(episode_lengths),
        }
