r"""Returns and advantages: pure array functions shared by every algorithm.

All inputs are time-major, shape ``[T, ...]`` (``[T]`` or ``[T, num_envs]``), and describe the transitions
:math:`(s_t, a_t, r_t, s'_t)` of one rollout in order:

- ``rewards[t]``      :math:`r_t`
- ``next_values[t]``  :math:`V(s'_t)`, the value of the TRUE next state; on a time-limit cut this is the
  final observation of the episode, not the first observation of the next one (gymnasium's
  ``info["final_obs"]``).
- ``terminated[t]``   the episode ended in a terminal state: nothing follows, so no bootstrap.
- ``dones[t]``        the episode ended for any reason (terminated or truncated): the sum stops here.

Truncation is not termination: a time-limit cut stops the sum but still bootstraps from
:math:`V(s'_t)`. A transition that is both terminated and truncated counts as terminated. The last row of
the rollout is treated as a cut (it bootstraps from ``next_values[-1]`` unless terminated).

``gae`` and ``discounted_returns`` take torch tensors or numpy arrays (all of one kind) and return the same
kind: rollouts acted in numpy compute their advantages in numpy, whose per-op cost on arrays of a few dozen
numbers is a fraction of torch's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

Array = Tensor | np.ndarray


def _float(mask: Array) -> Array:
    return mask.float() if isinstance(mask, Tensor) else np.asarray(mask, dtype=np.float32)


def _cut_mask(dones: Array) -> Array:
    """1 where the sum continues into row t+1, 0 where it stops (episode end or last row)."""
    keep = 1.0 - _float(dones)
    keep[-1] = 0.0
    return keep


def _backward_scan(base: Array, coef: Array) -> Array:
    """x_t = base_t + coef_t · x_{t+1}, from the last row back (x_T = 0): the recursion of every return.

    Row by row on views of the inputs, stacked once at the end; for tensors one fused multiply-add per row.
    """
    rows: list = []
    if isinstance(base, Tensor):
        running = torch.zeros_like(base[0])
        for b, c in zip(reversed(base.unbind(0)), reversed(coef.unbind(0))):
            running = torch.addcmul(b, c, running)
            rows.append(running)
        return torch.stack(rows[::-1])
    running = np.zeros_like(base[0])
    for t in range(len(base) - 1, -1, -1):
        running = base[t] + coef[t] * running
        rows.append(running)
    return np.stack(rows[::-1])


def discounted_returns(
    rewards: Array, next_values: Array, terminated: Array, dones: Array, gamma: float
) -> Array:
    r"""Monte Carlo returns-to-go with a bootstrap at cuts.

    :math:`G_t = r_t + \gamma\,(1 - \text{term}_t)\,[\,c_t\, G_{t+1} + (1 - c_t)\, V(s'_t)\,]`,
    where :math:`c_t = 0` at an episode end or the last row and 1 elsewhere. With ``next_values = 0``
    this is the plain :math:`G_t = \sum_k \gamma^k r_{t+k}` of REINFORCE.

    Shapes: every argument ``[T, ...]``; returns ``[T, ...]`` (float).
    """
    keep = _cut_mask(dones)
    alive = gamma * (1.0 - _float(terminated))
    return _backward_scan(rewards + alive * (1.0 - keep) * next_values, alive * keep)


def gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    terminated: Array,
    dones: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    r"""Generalized advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

    :math:`\delta_t = r_t + \gamma (1 - \text{term}_t) V(s'_t) - V(s_t)`,
    :math:`A_t = \sum_l (\gamma\lambda)^l \delta_{t+l}` within the episode, i.e.
    :math:`A_t = \delta_t + \gamma\lambda\, c_t\, A_{t+1}`.

    Shapes: every argument ``[T, ...]`` with ``values[t] = V(s_t)``. Returns ``(advantages, returns)``,
    both ``[T, ...]``, where ``returns = advantages + values`` is the value target (the λ-return).
    """
    deltas = rewards + gamma * (1.0 - _float(terminated)) * next_values - values
    advantages = _backward_scan(deltas, gamma * gae_lambda * _cut_mask(dones))
    return advantages, advantages + values

