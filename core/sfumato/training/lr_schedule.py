"""Learning rate as a pure function of the optimiser step: linear warm-up, then constant or cosine.

Being a function of the step alone, the schedule needs no state of its own to resume exactly:
the checkpoint's step is its state.
"""

from __future__ import annotations

import math

from .spec import TrainSpec


def learning_rate(step: int, total_steps: int, spec: TrainSpec) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    Warm-up rises linearly to ``spec.lr`` over ``warmup_steps`` (step 0 uses ``lr / warmup_steps``);
    the cosine schedule (Loshchilov & Hutter 2017, without restarts) then falls to ``min_lr`` at
    the last step.
    """
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    if spec.lr_schedule == "constant":
        return spec.lr
    decay_steps = max(1, total_steps - 1 - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / decay_steps)
    return spec.min_lr + (spec.lr - spec.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
