"""Schedules in log-sigma over the model's whole sigma range (k-diffusion's
``get_sigmas_exponential`` and ``get_sigmas_polyexponential``):

    exponential:      log sigma_i = log sigma_max + i / (N - 1) (log sigma_min - log sigma_max)
    polyexponential:  log sigma_i = log sigma_min + (1 - i / (N - 1))^rho (log sigma_max - log sigma_min)

``exponential`` is diffusers' ``use_exponential_sigmas``; ``polyexponential`` with ``rho = 1`` is
``exponential``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato


class Exponential(sfumato.SigmaSchedule):
    """Levels evenly spaced in log-sigma: a constant ratio between consecutive levels."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["exponential"] = "exponential"

    def sigmas(self, formulation, steps):
        levels = sfumato.spacing.exponential_sigmas(formulation.sigma_min, formulation.sigma_max, steps)
        return torch.from_numpy(levels).to(torch.float32)


class PolyExponential(sfumato.SigmaSchedule):
    """Levels on a power ramp in log-sigma."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["polyexponential"] = "polyexponential"
        rho: float = Field(
            1.0, gt=0, description="Power of the ramp in log-sigma: 1 is exponential, larger spends more steps at low noise."
        )

    def sigmas(self, formulation, steps):
        log_min, log_max = math.log(formulation.sigma_min), math.log(formulation.sigma_max)
        ramp = np.linspace(1, 0, steps) ** self.spec.rho
        return torch.from_numpy(np.exp(ramp * (log_max - log_min) + log_min)).to(torch.float32)
