"""Euler ancestral: an Euler step down to ``sigma_down`` followed by fresh noise up to
``sigma_next`` (k-diffusion's ``sample_euler_ancestral``; diffusers'
``EulerAncestralDiscreteScheduler``; the WebUI's "Euler a").

    sigma_up   = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)
    x_next     = x + (x - x0) / sigma * (sigma_down - sigma) + sigma_up * noise

With ``eta = 1`` each step is DDPM's ancestral step written in sigma space; ``eta = 0`` is Euler.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

from .sigma_space import SigmaSpaceScheduler
from .spacing import SigmaStepOptions


class EulerAncestral(SigmaSpaceScheduler):
    """First-order, stochastic, one model call per step."""

    stochastic = True

    class Spec(SigmaStepOptions):
        type: Literal["euler-ancestral"] = "euler-ancestral"
        eta: float = Field(1.0, ge=0, description="Weight of the fresh noise: 1 is ancestral sampling, 0 is Euler.")

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("euler-ancestral is stochastic: step() needs `noise` shaped like x")
        sigma, sigma_next = plan.sigmas[i], plan.sigmas[i + 1]
        prediction = self.predict(model, x, plan, i)
        sigma_up = self.spec.eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt()
        sigma_up = torch.minimum(sigma_next, sigma_up)
        sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
        x = x + prediction.eps * (sigma_down - sigma)  # eps = (x - x0) / sigma
        return sfumato.StepResult(x + sigma_up * noise, prediction.x0, {})
