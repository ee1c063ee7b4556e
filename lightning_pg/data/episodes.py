"""Whole episodes for REINFORCE: one complete episode from every env per batch."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_pg.data.base import EnvIterable
from lightning_pg.returns import discounted_returns


class EpisodeIterable(EnvIterable):
    """Each batch: reset every env, play until each has finished one episode, keep those episodes.

    Why reset rather than continue: REINFORCE is strictly on-policy, so an episode begun under the previous
    policy cannot be finished under this one; and keeping "the first ``k`` episodes to finish" would favour
    short episodes. An env that finishes early keeps stepping (a vector env steps all its envs) and those
    steps are discarded; they still count as env steps taken.

    Batch (flat over the kept steps, ``L`` in all): ``obs [L, *obs_shape]`` (normalized as the policy saw
    them), ``actions [L, ...]``,
    ``returns [L]`` (the reward-to-go G_t, see ``returns.discounted_returns``), plus ``env_steps`` and the
    episodes' returns and lengths. On a time-limit cut G bootstraps from ``module.bootstrap_value`` of the
    true final observation (zero when the module has no value function).
    """

    def collect(self) -> dict[str, Any]:
        module = self.module
        obs = self.reset()
        self.discounted_return = None  # every episode starts afresh
        num_envs = obs.shape[0]
        playing = np.ones(num_envs, dtype=bool)
        rows: list[tuple] = []
        final_values = torch.zeros(num_envs)
        episode_returns, episode_lengths = [], []
        while playing.any():
            with torch.no_grad():
                x = module.observe(self.as_tensor(obs).to(module.device))
                actions = module.policy.dist(x).sample()
            obs, rewards, terminated, truncated, info = self.step(actions)
            ending = playing & (terminated | truncated)
            rows.append((x, actions, rewards, terminated, ending, playing.copy()))
            if ending.any():
                cut = np.flatnonzero(ending & truncated & ~terminated)
                if len(cut):
                    with torch.no_grad():
                        final = module.policy.normalize(self.as_tensor(self.final_obs(info, cut)).to(module.device))
                        final_values[cut] = module.bootstrap_value(final).to(final_values.device)
                r, n = self.episode_stats(np.flatnonzero(ending))
                episode_returns.append(r)
                episode_lengths.append(n)
            playing &= ~ending

        device = module.device
        obs_b, actions_b = (torch.stack([row[i] for row in rows]) for i in range(2))
        rewards, terminated, ends, keep = (
            torch.as_tensor(np.stack([row[i] for row in rows]), device=device) for i in range(2, 6)
        )
        final_values = final_values.to(device)
        next_values = ends.float() * final_values  # only read where an episode is cut by its time limit
        rewards = self.scale_rewards(rewards, ends, valid=keep)
        returns = discounted_returns(rewards, next_values, terminated, ends, module.hparams.gamma)
        return {
            "obs": obs_b[keep],
            "actions": actions_b[keep],
            "returns": returns[keep],
            "env_steps": len(rows) * num_envs,
            "episode_returns": np.concatenate(episode_returns),
            "episode_lengths": np.concatenate(episode_lengths),
        }
