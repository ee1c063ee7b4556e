"""Optimizer helpers on plain torch (no Lightning): the parameters as one flat tensor, fused Adam."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def adam(params: Any, lr: float, fused: bool = True, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has one for the device (one kernel per step; GUIDE §3)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=fused, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


def contiguous(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """One flat Parameter whose slices ARE ``params``, and whose gradient's slices are their gradients.

    The optimizer, the gradient clipping and the zeroing then each run one kernel on one tensor instead of
    one per layer. The module keeps its parameters (they
    are views now), so forward, state_dict and checkpoints are unchanged. Something that sets the
    parameters' gradients to None (``module.zero_grad()``, as Lightning does before validation) cuts the
    gradient views loose: ``relink_gradients`` restores them, and ``gradient_step`` calls it every time.
    """
    params = list(params)
    if len({(p.device, p.dtype) for p in params}) != 1:
        return params
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    views, offset = [], 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        views.append((p, grad[offset : offset + n].view_as(p)))
        offset += n
    flat = nn.Parameter(flat)
    flat.grad_views, flat.grad_buffer = views, grad
    relink_gradients([flat])
    return [flat]


def relink_gradients(params: list[nn.Parameter]) -> None:
    for flat in params:
        views = getattr(flat, "grad_views", None)
        if views and (flat.grad is not flat.grad_buffer or views[0][0].grad is not views[0][1]):
            flat.grad = flat.grad_buffer
            for p, grad in views:
                p.grad = grad


def assign(params: list[nn.Parameter] | list[torch.Tensor], vector: torch.Tensor) -> None:
    """Copy ``vector``'s slices into ``params`` in place, in order (they may be views of one flat tensor, see
    ``contiguous``, so their storage is kept)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vector[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def flat_grad(output: torch.Tensor, params: list[nn.Parameter], **kwargs: Any) -> torch.Tensor:
    """∂output/∂params as one vector, in order (zeros for a parameter the output does not depend on)."""
    grads = torch.autograd.grad(output, params, allow_unused=True, **kwargs)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])
