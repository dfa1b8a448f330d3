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

    def step_tables(self, sigmas):
        """Adds ``sigma_up`` and ``sigma_down - sigma`` per step (``[N]``), computed once per plan."""
        sigma, sigma_next = sigmas[:-1], sigmas[1:]
        sigma_up = self.spec.eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt()
        sigma_up = torch.minimum(sigma_next, sigma_up)
        sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
        return {**super().step_tables(sigmas), "sigma_up": sigma_up, "down_step": sigma_down - sigma}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("euler-ancestral is stochastic: step() needs `noise` shaped like x")
        prediction = self.predict(model, x, plan, i)
        extra = plan.extra if plan.extra and "sigma_up" in plan.extra else self.step_tables(plan.sigmas)
        x = torch.addcmul(x, prediction.eps, extra["down_step"][i])  # eps = (x - x0) / sigma
        return sfumato.StepResult(torch.addcmul(x, extra["sigma_up"][i], noise), prediction.x0, {})
