"""One gradient step of a manually optimized module: Lightning's public API, or the same step taken directly.

Every algorithm steps its optimizers through :meth:`RLModule.gradient_step`, which asks an :class:`OptimizerSteps`
made once per fit. Its public path is Lightning's manual optimization as documented: ``optimizer.zero_grad()``,
``manual_backward``, ``clip_gradients``, ``optimizer.step()``. Those wrap the four plain calls in hooks,
precision plugins and the profiler, a fixed cost per step that small networks feel (an on-policy CartPole run
takes thousands of steps; ``benchmarks/update_step.py`` measures it). Where none of that would do anything
(one device, a precision without gradient scaling, no profiler, and no override of the hooks the public path
calls in the module or any callback), the same step is taken directly and counted as Lightning counts it. This
module is the only place that touches Lightning's internals: where they are not as expected it takes the
public path (and :func:`let_backward_leave_parameters_out` sets DDP's unused-parameter detection).
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

from lightning_pg.optim import relink_gradients

#: what the public path runs around backward and step: overriding any of these takes the public path
_MODULE_HOOKS = ("backward", "manual_backward", "clip_gradients", "on_before_backward", "on_after_backward",
                 "on_before_optimizer_step")
_CALLBACK_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_DIRECT_PRECISIONS = ("32", "32-true", "64", "64-true", "bf16-mixed", "bf16-true")


class OptimizerSteps:
    direct_enabled = True  # tests and benchmarks switch the direct path off

    def __init__(self, module: pl.LightningModule):
        trainer = module.trainer
        manual = getattr(trainer.fit_loop.epoch_loop, "manual_optimization", None)
        self._progress = getattr(manual, "optim_step_progress", None)  # counts steps as trainer.global_step
        self.direct = (
            self.direct_enabled and self._progress is not None and hasattr(self._progress, "increment_ready")
            and type(trainer.strategy) is SingleDeviceStrategy and str(trainer.precision) in _DIRECT_PRECISIONS
            and isinstance(trainer.profiler, PassThroughProfiler)
            and not any(_overrides(type(module), pl.LightningModule, hook) for hook in _MODULE_HOOKS)
            and not any(_overrides(type(cb), pl.Callback, hook) for cb in trainer.callbacks for hook in _CALLBACK_HOOKS)
        )

    def step(self, module: pl.LightningModule, loss: Tensor, optimizer: Any, max_grad_norm: float | None) -> None:
        """zero_grad, backward, optional clipping of the gradient's global norm to ``max_grad_norm``, step."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        relink_gradients(params)
        if not self.direct:
            optimizer.zero_grad(set_to_none=False)  # (to None would cut a flat parameter's gradient views loose)
            module.manual_backward(loss)
            if max_grad_norm is not None:
                module.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
        else:
            flat = _flat_parameter(params)
            if flat is not None:  # one in-place zero and a clip of the one flat gradient, in place of torch's
                flat.grad_buffer.zero_()  # zero_grad and clip_grad_norm_ wrappers and their per-tensor loops
            else:
                optimizer.optimizer.zero_grad(set_to_none=False)
            loss.backward()
            self._clip_and_step(params, flat, optimizer, max_grad_norm)
        # Mixed precision runs the whole training_step in one autocast region, whose cache keeps the low-precision
        # copy of each weight until the region ends: without this, later forwards in this step use the old weights.
        torch.clear_autocast_cache()

    def _clip_and_step(self, params: list[Tensor], flat: Tensor | None, optimizer: Any,
                       max_grad_norm: float | None) -> None:
        """The direct path's end, once the gradient is in place: clip, then the optimizer's step, counted in
        Lightning's progress as its own step would be."""
        if max_grad_norm is not None and flat is not None:
            _clip_flat(flat.grad_buffer, max_grad_norm)
        elif max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
        self._progress.increment_ready()
        optimizer.optimizer.step()
        self._progress.increment_completed()

    def apply(self, module: pl.LightningModule, gradient: Tensor, optimizer: Any, max_grad_norm: float | None) -> None:
        """The same step for a gradient computed elsewhere (``gradient``: the optimizer's parameters flattened
        in order), e.g. by A3C's workers. Where the step is taken directly it is copied into the flat gradient;
        elsewhere it goes through backward as the gradient of ⟨θ, gradient⟩ (whose gradient it is), so hooks,
        precision plugins and strategies see an ordinary backward."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        flat = _flat_parameter(params)
        if self.direct and flat is not None:
            relink_gradients(params)
            flat.grad_buffer.copy_(gradient)
            self._clip_and_step(params, flat, optimizer, max_grad_norm)
            return
        pieces = gradient.to(params[0].device, params[0].dtype).split([p.numel() for p in params])
        self.step(module, sum((p * g.view_as(p)).sum() for p, g in zip(params, pieces)), optimizer, max_grad_norm)


def let_backward_leave_parameters_out(trainer: pl.Trainer) -> None:
    """Under DDP, accept a backward that gives some parameters no gradient (an off-policy critic step leaves the
    actor out, TRPO's critic steps the policy): DDP's ``find_unused_parameters``, set before the strategy wraps
    the module (Lightning's ``setup`` hook runs first). Without it DDP stops at the first such step.
    Lightning's ``ddp_find_unused_parameters_true`` strategy is the same setting; this makes plain ``ddp`` work."""
    kwargs = getattr(trainer.strategy, "_ddp_kwargs", None)
    if isinstance(kwargs, dict) and trainer.world_size > 1:
        kwargs["find_unused_parameters"] = True


def _flat_parameter(params: list[Tensor]) -> Tensor | None:
    """The optimizer's one flat parameter (``optim.contiguous``: every weight a view of it), else None."""
    return params[0] if len(params) == 1 and hasattr(params[0], "grad_buffer") else None


def _clip_flat(grad: Tensor, max_norm: float) -> None:
    """``clip_grad_norm_``'s rule on one flat gradient: scale by max_norm / (norm + 1e-6) where that is < 1."""
    norm = torch.linalg.vector_norm(grad)
    if grad.device.type == "cpu":  # the factor as a Python number: fewer ops, and no device to wait for
        scale = max_norm / (float(norm) + 1e-6)
        if not scale >= 1.0:  # (NaN too: it reaches the weights, and the finiteness check sees it)
            grad.mul_(scale)
    else:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))


def _overrides(cls: type, base: type, name: str) -> bool:
    return getattr(cls, name, None) is not getattr(base, name, None)

