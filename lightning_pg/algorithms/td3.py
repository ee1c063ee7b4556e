r"""TD3: Twin Delayed DDPG (Fujimoto et al. 2018, https://arxiv.org/abs/1802.09477).

DDPG plus three changes against Q over-estimation, and nothing else:

1. clipped double Q: two critics, the target takes the smaller,
   y = r + γ (1 − terminated) min_i Q'_i(s', ã')                        (``n_critics = 2``)
2. target policy smoothing: ã' = clip(μ'(s') + clip(ε, −c, c), −1, 1), ε ~ N(0, σ̃²)   (``target_actions``)
3. delayed policy updates: the actor and the targets move once per ``policy_delay`` critic updates.

The actor still maximizes Q_1(s, μ(s)) (the first critic), as in the paper.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.ddpg import DDPG


class TD3(DDPG):
    r"""TD3 for Box action spaces; DDPG's ``train_step`` with the three changes above.

    Args:
        policy_delay: critic updates per actor and target update (the paper's d = 2).
        target_policy_noise: σ̃ of the smoothing noise on the target action, in the [-1, 1] scale (0.2).
        target_noise_clip: c, the bound on that noise (0.5).
        **kwargs: DDPG's arguments (action_noise, noise_std, network, learning_rate, buffer_size, ...).

    Differences from the paper: Stable-Baselines3's defaults (batch 256 instead of 100, ``learning_starts``
    100 instead of 10k random steps; the RL Zoo configs set 10k); the policy delay counts every critic update
    since the start of training (SB3's ``_n_updates``), and that count is checkpointed.
    """

    n_critics = 2  # (1) clipped double Q: DDPG.train_step takes the min over the critics

    def __init__(
        self,
        env_id: str,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, **kwargs)
        check(policy_delay >= 1, "policy_delay", policy_delay, "an integer >= 1")
        check(target_policy_noise >= 0, "target_policy_noise", target_policy_noise, ">= 0")
        check(target_noise_clip >= 0, "target_noise_clip", target_noise_clip, ">= 0")
        self.policy_delay = policy_delay  # (3) delayed policy updates

    def target_actions(self, next_obs: Tensor) -> Tensor:
        """(2) target policy smoothing: clip(μ'(s') + clip(ε, −c, c), −1, 1)."""
        actions = self.actor_target(next_obs)
        noise = torch.randn_like(actions) * self.hparams.target_policy_noise
        noise = noise.clamp(-self.hparams.target_noise_clip, self.hparams.target_noise_clip)
        return (actions + noise).clamp(-1.0, 1.0)
