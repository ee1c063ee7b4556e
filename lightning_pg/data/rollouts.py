"""n-step rollouts for A2C and PPO: ``n_steps`` transitions from each env, played by the current policy."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_pg.data.base import EnvIterable
from lightning_pg.returns import gae


class RolloutIterable(EnvIterable):
    """Each batch continues where the last one stopped (the envs are not reset between rollouts).

    Per step only the policy runs (sample an action, keep its log-prob); V(s) is computed afterwards in
    one batched pass over the whole rollout, together with V of the observation after the last step and
    V of the true final observations of time-limit cuts. Advantages and returns come from
    ``returns.gae``. The raw sampled action is stored; only the copy sent to the env is clipped.

    Batch (flat over ``B = n_steps * num_envs``, time-major): ``obs [B, *obs_shape]`` (normalized as the
    policy saw them), ``actions [B, ...]``, ``log_probs [B]``, ``values [B]``, ``advantages [B]``,
    ``returns [B]``, plus ``env_steps`` and the finished episodes' returns and lengths.
    """

    def __init__(self, module: Any, n_steps: int):
        super().__init__(module)
        self.n_steps = n_steps

    def collect(self) -> dict[str, Any]:
        module, n_steps = self.module, self.n_steps
        obs = self.obs if self.obs is not None else self.reset()
        num_envs = obs.shape[0]
        device = module.device
        xs, actions, log_probs = [], [], []
        rewards = np.zeros((n_steps, num_envs), np.float32)
        terminated = np.zeros((n_steps, num_envs), bool)
        dones = np.zeros((n_steps, num_envs), bool)
        cut_at, cut_obs = [], []  # (t, env) of time-limit cuts and their true final observations
        episode_returns, episode_lengths = [], []
        # On the CPU the whole rollout stays in numpy until the batch is built (see ActorCritic.numpy_actor)
        numpy_actor = module.policy.numpy_actor() if getattr(module, "acts_in_numpy", False) else None
        with torch.no_grad():
            for t in range(n_steps):
                if numpy_actor is not None:
                    x = obs
                    action, log_prob = numpy_actor(obs)
                else:
                    x = module.observe(self.as_tensor(obs).to(device))
                    dist = module.policy.dist(x)
                    action = dist.sample()
                    log_prob = dist.log_prob(action)
                xs.append(x)
                actions.append(action)
                log_probs.append(log_prob)
                obs, rewards[t], terminated[t], truncated, info = self.step(action)
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

            # one value pass: V(s_t) for every step, V(s_T) after the last one, V(final obs) of cuts
            if numpy_actor is not None:
                all_values = numpy_actor.values(np.concatenate([*xs, obs, *cut_obs]))
                rewards = self.scale_rewards(torch.from_numpy(rewards), dones).numpy()
            else:
                to_x = lambda o: module.policy.normalize(self.as_tensor(o).to(device))  # noqa: E731
                all_values = module.policy.value(torch.cat([*xs, *map(to_x, [obs, *cut_obs])]))
                rewards = self.scale_rewards(torch.as_tensor(rewards, device=device), dones)
                terminated, dones = torch.as_tensor(terminated, device=device), torch.as_tensor(dones, device=device)
            values = all_values[: n_steps * num_envs].reshape(n_steps, num_envs)
            next_values = 1.0 * all_values[num_envs: (n_steps + 1) * num_envs].reshape(n_steps, num_envs)
            if cut_at:
                t_idx, e_idx = zip(*cut_at)
                next_values[list(t_idx), list(e_idx)] = all_values[(n_steps + 1) * num_envs:]
            advantages, returns = gae(rewards, values, next_values, terminated, dones,
                                      module.hparams.gamma, module.hparams.gae_lambda)
        batch = {
            "obs": _cat(xs),
            "actions": _cat(actions),
            "log_probs": _cat(log_probs),
            "values": values.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
        }
        if numpy_actor is not None:
            batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        return {
            **batch,
            "env_steps": n_steps * num_envs,
            "episode_returns": np.concatenate(episode_returns) if episode_returns else np.zeros(0),
            "episode_lengths": np.concatenate(episode_lengths) if episode_lengths else np.zeros(0),
        }


def _cat(items: list) -> torch.Tensor | np.ndarray:
    """Concatenate per-step tensors, or per-step numpy arrays (numpy acting)."""
    return torch.cat(items) if isinstance(items[0], torch.Tensor) else np.concatenate(items)
