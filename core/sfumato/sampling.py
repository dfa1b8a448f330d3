"""The sampling loop: scheduler steps over a guided predictor, with a per-step hook.

This is the one loop every generation task runs (text-to-image, image-to-image, inpainting,
class-conditional, unconditional). It has no host synchronisation inside: noise for stochastic
samplers is drawn on the CPU from the run's seeded generator (so a seed gives the same image on
any device) for every step before the first, and moved in one copy; the finiteness check happens
once, after the last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .brownian import brownian_increments
from .errors import Interrupted, SamplingError
from .interfaces import Model, SamplerStep, SamplingPlan, Scheduler


@dataclass
class StepEvent:
    """What a step callback sees after step ``i`` of ``total``.

    :param x: the sample after the step (scheduler working space).
    :param denoised: the step's x0 prediction (decode it for a preview).
    :param t: the timestep the step started from.
    """

    i: int
    total: int
    t: Tensor
    x: Tensor
    denoised: Tensor


#: Called after every step. Returning a tensor replaces ``x``; raising ``sfumato.Interrupted``
#: stops the run early (the caller gets the latest ``denoised``).
StepCallback = Callable[[StepEvent], "Tensor | None"]


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn on the CPU, then moved: the same seed gives the same noise on
    every device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def step_noise(steps: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """``[steps, *shape]``: the noise of each step of a stochastic sampler, drawn on the CPU in step
    order (the values per-step draws would give) and moved to ``device`` in one copy, so the loop
    copies nothing from the host (a pageable host-to-device copy waits for the device). From
    pinned memory the one copy does not wait either. It holds ``steps`` samples' worth of memory
    (1,000 DDPM steps of a batch of four 4x64x64 latents: 256 MiB)."""
    noise = torch.stack([torch.randn(shape, generator=generator, dtype=torch.float32) for _ in range(steps)])
    if torch.device(device).type == "cuda":
        return noise.pin_memory().to(device=device, dtype=dtype, non_blocking=True)  # cast on the device
    return noise.to(device=device, dtype=dtype)


def sampler_noise(scheduler: Scheduler, plan: SamplingPlan, shape: tuple[int, ...], generator: torch.Generator | None,
                  device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """The noise of every step of ``plan`` for ``scheduler``, before the first step: None for a
    deterministic sampler; ``[steps, *shape]``, or ``[steps, k, *shape]`` for ``noise_draws = k > 1``;
    independent draws, or the increments of one Brownian path where the sampler gives
    ``noise_levels``."""
    if not scheduler.stochastic:
        return None
    draws = scheduler.noise_draws
    levels = scheduler.noise_levels(plan)
    if levels is None:
        return step_noise(len(plan), shape if draws == 1 else (draws, *shape), generator, device, dtype)
    if tuple(levels.shape) != (len(plan), draws + 1):
        raise SamplingError(f"scheduler {scheduler.type_name()!r}: noise_levels has shape {tuple(levels.shape)}, "
                            f"expected ({len(plan)}, {draws + 1}) (steps, noise_draws + 1)")
    increments = brownian_increments(levels.cpu(), shape, generator)  # (steps, k, *shape)
    if draws == 1:
        increments = increments[:, 0]
    if torch.device(device).type == "cuda":
        return increments.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return increments.to(device=device, dtype=dtype)


def run_sampler(
    model: Model,
    scheduler: Scheduler,
    plan: SamplingPlan,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    known: Tensor | None = None,
    known_noise: Tensor | None = None,
    mask: Tensor | None = None,
    callback: StepCallback | None = None,
    progress: bool = True,
    step: SamplerStep | None = None,
) -> Tensor:
    """Run every step of ``plan`` from ``x`` and return the final sample.

    :param known: clean latents of the region to keep, for inpainting with a model not trained
        for it: after each step the sample is blended with ``known`` noised to the next level,
        ``x = mask * x + (1 - mask) * noised(known)`` (``mask`` is 1 where new content is made).
    :param known_noise: the fixed noise used to noise ``known`` (defaults to fresh noise).
    :param step: the run's ``SamplerStep`` (the ``GuidanceContext.step`` the model's guidance
        was wrapped with): its ``count`` is set to the plan's steps and it enters each step
        before the scheduler takes it, so guidance sees the step of every model call.
    :raises SamplingError: when the result is not finite, naming the scheduler.
    """
    if (known is None) != (mask is None):
        raise ValueError("inpainting needs both `known` latents and a `mask`")
    if known is not None and known_noise is None:
        known_noise = randn(tuple(known.shape), generator, known.device, known.dtype)
    carry: dict[str, Tensor] = {}
    denoised = x
    steps = range(len(plan))
    noise = sampler_noise(scheduler, plan, tuple(x.shape), generator, x.device, x.dtype)
    if step is not None:
        step.count = len(plan)
    for i in tqdm(steps, desc=f"sampling ({scheduler.type_name()})", disable=not progress, leave=False):
        if step is not None:
            step.enter(i)
        x, denoised, carry = scheduler.step(model, x, plan, i, carry, noise[i] if noise is not None else None)
        if known is not None:
            x = mask * x + (1 - mask) * scheduler.noised(known, known_noise, plan, i + 1)
        if callback is not None:
            try:
                replaced = callback(StepEvent(i, len(plan), plan.timesteps[i], x, denoised))
            except Interrupted:
                x = denoised
                break
            if replaced is not None:
                x = replaced
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).float().mean().item()
        raise SamplingError(
            f"sampling with scheduler {scheduler.type_name()!r} produced non-finite values "
            f"({bad:.1%} of the sample is NaN or inf); check the guidance scale, the dtype "
            "(float16 overflows are common) and the model weights"
        )
    return x
