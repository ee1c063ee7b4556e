"""Hyperparameters that change over training, written as the RL Zoo writes them.

``0.2`` or ``"0.2"`` is a constant; ``"lin_0.2"`` decays linearly from 0.2 at the start to 0 at the end
of ``total_timesteps``. A schedule is called with the remaining progress, 1 at the start and 0 at the end
(Stable-Baselines3's convention). ``crossed`` is the env-step clock's tick: whether a periodic event
(evaluation, logging, a checkpoint) falls within the env steps a batch just took.
"""
from __future__ import annotations

import functools
from typing import Callable, Union

Schedule = Callable[[float], float]
ScheduleSpec = Union[float, str]


def parse_schedule(spec: ScheduleSpec) -> Schedule | None:
    """A callable for ``spec``, or None when ``spec`` is not a valid schedule (the caller reports it)."""
    try:
        return _parse(spec)
    except TypeError:  # unhashable, so no number or string either
        return None


@functools.lru_cache(maxsize=None)  # read for every minibatch (PPO's clip range): each spec is parsed once
def _parse(spec: ScheduleSpec) -> Schedule | None:
    try:
        if isinstance(spec, str) and spec.startswith("lin_"):
            start = float(spec[4:])
            return lambda progress_remaining: start * progress_remaining
        value = float(spec)
    except (TypeError, ValueError):
        return None
    return lambda progress_remaining: value


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in ``(before, after]``."""
    return every > 0 and after // every > before // every
