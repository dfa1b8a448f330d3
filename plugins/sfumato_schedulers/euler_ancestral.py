"""Euler ancestral: an Euler step down to ``sigma_down`` followed by fresh noise up to
``sigma_next`` (k-diffusion's ``sample_euler_ancestral``; diffusers'
``EulerAncestralDiscreteScheduler``; the WebUI's "Euler a").

    sigma_up   = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)
    x_next     = x + (x - x0) / sigma * (sigma_down - sigma) + sigma_up * noise

With ``eta = 1`` each step is DDPM's ancestral step written in sigma space; ``eta = 0`` is Euler.

``sigma_down``, ``sigma_up`` and ``renoise`` come from ``ancestral_split``, as for the other
ancestral samplers: for a formulation with signal scale ``alpha(sigma) = 1 - c sigma`` (flow
matching) the split is made on the variance-exploding level ``s = sigma / alpha`` of each step and
the step renoises from ``sigma_down`` to ``sigma_next`` with ``x_next = alpha_next / alpha_down *
x_down + alpha_next * s_up * noise``, which keeps the marginal ``alpha x0 + sigma eps`` (ComfyUI's
``sample_euler_ancestral_RF`` is this step); for VP and EDM the ratio is 1 and the tables are the
above.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

from .sigma_space import SigmaSpaceScheduler, ancestral_split
from .spacing import SigmaStepOptions


class EulerAncestral(SigmaSpaceScheduler):
    """First-order, stochastic, one model call per step."""

    stochastic = True

    class Spec(SigmaStepOptions):
        type: Literal["euler-ancestral"] = "euler-ancestral"
        eta: float = Field(1.0, ge=0, description="Weight of the fresh noise: 1 is ancestral sampling, 0 is Euler.")

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): ``down_step = sigma_down - sigma``, the noise scale
        ``sigma_up`` and, where the signal scale is not 1, the ``renoise`` factor
        ``alpha_next / alpha_down``; computed once per plan."""
        split = ancestral_split(schedule, sigmas, self.spec.eta)
        down_step = split.pop("sigma_down") - sigmas[:-1]
        return {**super().step_tables(sigmas, schedule), **split, "down_step": down_step}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("euler-ancestral is stochastic: step() needs `noise` shaped like x")
        prediction = self.predict(model, x, plan, i)
        extra = self.tables(plan, "down_step")
        x = torch.addcmul(x, self.derivative(plan, prediction), extra["down_step"][i])  # Euler to sigma_down
        if "renoise" in extra:
            x = x * extra["renoise"][i]
        return sfumato.StepResult(torch.addcmul(x, extra["sigma_up"][i], noise), prediction.x0, {})
