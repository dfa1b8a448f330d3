"""What the multistep samplers share: the model outputs of past steps carried from step to step,
the order each step can afford, and DPM-Solver's planning.

A multistep sampler reuses the model outputs of earlier steps (LMS its derivatives, DPM-Solver++,
UniPC and DEIS their x0 or eps predictions), which travel in ``carry`` as ``<name>1`` (the last
step's), ``<name>2``, ... . A run has no history at its first step, so the order warms up
(``min(i + 1, order)``, ``i`` counted from the first step of the run: an image-to-image plan
starts fresh), and per-step coefficient tables are computed for every order a step could use
(``[N, order, order]``), so cutting a plan for image-to-image keeps them valid.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .dpmpp_2m import DPMSolverPlusPlus2M
from .sigma_space import SigmaSpaceScheduler


class MultistepSolver(SigmaSpaceScheduler):
    """Plans as diffusers' multistep solvers (``DPMSolverMultistepScheduler``, ``UniPC``, ``DEIS``)
    do: ``linspace`` and ``leading`` spacings over ``N + 1`` timesteps with the last dropped, and
    unit-variance noise in the variance-preserving space at the start."""

    spaced_timesteps = DPMSolverPlusPlus2M.spaced_timesteps
    init_noise_sigma = DPMSolverPlusPlus2M.init_noise_sigma


def dpm_solver_order(i: int, steps: int, order: int) -> int:
    """The order of step ``i`` of ``steps`` under diffusers' DPM-Solver rule (``lower_order_final``
    with a final level of 0): warm-up ``min(i + 1, order)``; the last step, to sigma = 0, is first
    order (it returns the model's x0); with fewer than 15 steps the one before it is at most
    second order, which keeps few-step runs stable."""
    if i == steps - 1:
        return 1
    if i == steps - 2 and steps < 15:
        return min(i + 1, order, 2)
    return min(i + 1, order)


def history(carry: dict[str, Tensor] | None, name: str, count: int) -> list[Tensor]:
    """The ``count`` most recent past outputs ``name`` in ``carry``, the last step's first."""
    return [carry[f"{name}{k}"] for k in range(1, count + 1)] if count else []


def remember(outputs: list[Tensor], name: str, keep: int) -> dict[str, Tensor]:
    """The carry holding the first ``keep`` of ``outputs`` (this step's first) as ``name1``, ..."""
    return {f"{name}{k}": output for k, output in enumerate(outputs[:keep], start=1)}


def half_log_snr(sigmas: Tensor) -> np.ndarray:
    """``lambda = -log(sigma)`` of a plan's levels ``[N + 1]`` in float64 (``inf`` for the final 0),
    the time variable of the exponential integrators (DPM-Solver++, UniPC): the half log-SNR for
    the VP formulation's native sample."""
    with np.errstate(divide="ignore"):
        return -np.log(sigmas.double().numpy())
