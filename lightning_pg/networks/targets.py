"""Target networks (DDPG, TD3, SAC): a frozen copy of a network that trails it by Polyak averaging."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` without gradients, moved toward it by :func:`polyak_update` only."""
    return copy.deepcopy(net).requires_grad_(False)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ' ← (1 − τ) θ' + τ θ for every parameter, in one foreach kernel."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


@contextmanager
def no_weight_grads(net: nn.Module) -> Iterator[None]:
    """Inside, ``net``'s weights get no gradient (the actor's loss needs dQ/da through the critic, not dQ/dθ)."""
    net.requires_grad_(False)
    try:
        yield
    finally:
        net.requires_grad_(True)
