"""Timestep and sigma spacing: which noise levels a sampler visits for a given number of steps.

Every first-party scheduler plans with these functions, so the spacing options mean the same thing
for all of them:

- timestep spacing (``leading``, ``trailing``, ``linspace``) picks ``steps`` of the model's
  training timesteps, as in Table 2 of Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
  Steps are Flawed" (https://arxiv.org/abs/2305.08891); ``trailing`` always starts at the last
  training timestep, which the paper recommends.
- sigma spacing (``karras``, ``exponential``), for samplers that work in sigma space, ignores the
  timestep spacing and places ``steps`` noise levels between the model's smallest and largest sigma:
  ``karras`` by Eq. 5 of Karras et al. 2022 (https://arxiv.org/abs/2206.00364) with rho = 7,
  ``exponential`` uniformly in log-sigma. The model then sees the fractional timestep of each sigma.

The numbers are computed in float64 numpy exactly as diffusers computes them, then stored as
float32 tensors, so a plan matches the diffusers scheduler of the same settings.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

import sfumato

TimestepSpacing = Literal["leading", "trailing", "linspace"]
SigmaSpacing = Literal["default", "karras", "exponential"]

SPACING_DOC = (
    "How the timesteps are spread over the training range (Lin et al. 2023, Table 2): leading "
    "(0, T/N, 2T/N, ... plus steps_offset), trailing (T-1, T-1-T/N, ...: starts at pure noise) or "
    "linspace (evenly from T-1 to 0)."
)


class StepOptions(sfumato.ComponentSpec):
    """The spec fields every first-party scheduler shares: how many steps, and where they fall."""

    steps: int = Field(50, ge=1, description="Number of sampling steps (at most the training timesteps).")
    spacing: TimestepSpacing = Field("leading", description=SPACING_DOC)
    steps_offset: int = Field(
        0, ge=0, description="Added to every 'leading' timestep (Stable Diffusion 1.x configs use 1)."
    )


class SigmaStepOptions(StepOptions):
    """``StepOptions`` plus the sigma spacing of sigma-space samplers (Euler, Heun, DPM-Solver++)."""

    spacing: TimestepSpacing = Field("linspace", description=SPACING_DOC)
    sigmas: SigmaSpacing = Field(
        "default",
        description="Noise levels: default (those of the spaced timesteps), karras (Karras et al. "
        "2022, rho = 7; the WebUI's 'Karras' samplers) or exponential (uniform in log-sigma); "
        "karras and exponential span the model's whole sigma range and ignore `spacing`.",
    )


def spaced_timesteps(num_train_timesteps: int, steps: int, spacing: TimestepSpacing, offset: int = 0) -> np.ndarray:
    """``steps`` training timesteps in decreasing order, float64; ``linspace`` values are not
    rounded (sigma-space samplers use them as they are, DDPM and DDIM round them)."""
    if not 1 <= steps <= num_train_timesteps:
        raise sfumato.SpecError(
            f"[scheduler] steps = {steps} must be between 1 and the model's {num_train_timesteps} "
            "training timesteps ([diffusion] timesteps)"
        )
    if spacing == "linspace":
        timesteps = np.linspace(0, num_train_timesteps - 1, steps)[::-1]
    elif spacing == "leading":
        timesteps = (np.arange(0, steps) * (num_train_timesteps // steps)).round()[::-1] + offset
    else:  # trailing
        timesteps = np.arange(num_train_timesteps, 0, -num_train_timesteps / steps).round() - 1
    if timesteps[0] > num_train_timesteps - 1:
        raise sfumato.SpecError(
            f"[scheduler] steps_offset = {offset} puts the first of {steps} 'leading' timesteps past "
            f"the last training timestep {num_train_timesteps - 1}; lower it or use fewer steps"
        )
    return timesteps.copy()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, Eq. 5: ``(max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho``."""
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """``steps`` sigmas evenly spaced in log-sigma from ``sigma_max`` down to ``sigma_min``."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))


def respaced_sigmas(
    schedule: sfumato.NoiseSchedule, steps: int, spacing: SigmaSpacing
) -> tuple[Tensor, Tensor]:
    """Karras or exponential noise levels over the model's sigma range and their (fractional)
    timesteps: ``(timesteps [N], sigmas [N])``, float32."""
    sigma_min, sigma_max = float(schedule.sigmas[0]), float(schedule.sigmas[-1])
    respace = karras_sigmas if spacing == "karras" else exponential_sigmas
    sigmas = torch.from_numpy(respace(sigma_min, sigma_max, steps)).to(torch.float32)
    return schedule.timestep_at(sigmas), sigmas


def keep_strength(plan: sfumato.SamplingPlan, strength: float) -> sfumato.SamplingPlan:
    """Keep only the last ``int(N * strength)`` steps of ``plan`` (image-to-image), as diffusers'
    img2img pipelines do; every per-step tensor in ``plan.extra`` is cut the same way."""
    if not 0 < strength <= 1:
        raise sfumato.SpecError(f"strength must be in (0, 1], got {strength}")
    n = len(plan)
    start = n - min(int(n * strength), n)
    if start == n:
        raise sfumato.SpecError(
            f"strength {strength} of {n} steps leaves no step to run; raise the strength or the steps"
        )
    if start == 0:
        return plan
    extra = {name: values[start:] for name, values in (plan.extra or {}).items()}
    return replace(plan, timesteps=plan.timesteps[start:], sigmas=plan.sigmas[start:], extra=extra)
