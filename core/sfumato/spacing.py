"""Timestep spacing and sigma tables: which noise levels a sampler visits for a given number of steps.

Public helpers for scheduler and sigma-schedule plugins, so that none of them copies its own:

- ``spaced_timesteps`` picks ``steps`` of the model's training timesteps with the ``leading``,
  ``trailing`` or ``linspace`` spacing of Table 2 of Lin et al. 2023, "Common Diffusion Noise
  Schedules and Sample Steps are Flawed" (https://arxiv.org/abs/2305.08891); ``trailing`` always
  starts at the last training timestep, which the paper recommends.
- ``karras_sigmas`` and ``exponential_sigmas`` place ``steps`` noise levels between a smallest and
  a largest sigma: by Eq. 5 of Karras et al. 2022 (https://arxiv.org/abs/2206.00364), and
  uniformly in log-sigma.

Each computes in float64 numpy exactly as diffusers does, so a plan that stores the result as
float32 matches the diffusers scheduler of the same settings bit for bit. Whole sigma schedules
(Karras, beta, Align Your Steps, ...) are components of the kind ``sigmas``: see
``sfumato.SigmaSchedule``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .errors import SpecError

TimestepSpacing = Literal["leading", "trailing", "linspace"]


def spaced_timesteps(num_train_timesteps: int, steps: int, spacing: TimestepSpacing, offset: int = 0) -> np.ndarray:
    """``steps`` training timesteps in decreasing order, float64; ``linspace`` values are not
    rounded (sigma-space samplers use them as they are, DDPM and DDIM round them).

    :param offset: added to every ``leading`` timestep (``steps_offset``; 1 in Stable Diffusion
        1.x configs).
    """
    if not 1 <= steps <= num_train_timesteps:
        raise SpecError(
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
        raise SpecError(
            f"[scheduler] steps_offset = {offset} puts the first of {steps} 'leading' timesteps past "
            f"the last training timestep {num_train_timesteps - 1}; lower it or use fewer steps"
        )
    return timesteps.copy()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, Eq. 5: ``(max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho``,
    ``steps`` values from ``sigma_max`` down to ``sigma_min`` (float64). Larger ``rho`` spends
    more steps at low noise; the paper uses 7."""
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """``steps`` sigmas evenly spaced in log-sigma from ``sigma_max`` down to ``sigma_min`` (float64)."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))
