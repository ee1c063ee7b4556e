"""Running mean and variance (Welford/Chan's parallel update), as Stable-Baselines3's VecNormalize keeps them.

The statistics are buffers: they live in the checkpoint, move with the module's device, are exported with
the policy, and change only when ``update`` is called (the rollout does; ``predict`` and ``evaluate`` never
do, so evaluation uses frozen statistics).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Shapes: ``update(x)`` takes ``[B, *shape]``; ``normalize(x)`` maps ``[B, *shape]`` to the same shape."""

    def __init__(self, shape: tuple[int, ...] = (), clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.epsilon = clip, epsilon

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.to(self.mean.dtype)
        if x.shape[0] == 0:
            return
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total)
        self.count.copy_(total)

    def normalize(self, x: Tensor) -> Tensor:
        scaled = (x - self.mean.float()) / torch.sqrt(self.var.float() + self.epsilon)
        return scaled.clamp(-self.clip, self.clip)

    def scale(self, x: Tensor) -> Tensor:
        """Divide by the running std only (reward scaling: the mean is kept, as in VecNormalize)."""
        return (x / torch.sqrt(self.var.float() + self.epsilon)).clamp(-self.clip, self.clip)
