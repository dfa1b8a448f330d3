"""DPM-2 ancestral: a DPM-Solver-2 step down to ``sigma_down`` followed by fresh noise up to
``sigma_next`` (k-diffusion's ``sample_dpm_2_ancestral``; diffusers'
``KDPM2AncestralDiscreteScheduler``; the WebUI's "DPM2 a"). Lu et al. 2022,
https://arxiv.org/abs/2206.00927, with Karras et al. 2022's midpoint in log sigma:

    sigma_mid = sqrt(sigma * sigma_down)                 (halfway in log sigma)
    x_mid     = x + d(x, sigma) (sigma_mid - sigma)      (d = dx/dsigma = (x - x0) / sigma)
    x_down    = x + d(x_mid, sigma_mid) (sigma_down - sigma)
    x_next    = renoise * x_down + sigma_up * noise

``sigma_down``, ``sigma_up`` and ``renoise`` come from ``ancestral_split`` (the split on the
variance-exploding level, as Euler ancestral makes it; ``renoise`` is 1 for VP and EDM). The last
step, to sigma = 0, is an Euler step with one model call. Where ``sigma_down`` is 0 before the
end (flow matching's first step at ``eta >= 1``, from pure noise), the midpoint is ``sigma``
itself, which makes the step the Euler step k-diffusion takes there.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

from .sigma_space import SigmaSpaceScheduler, ancestral_split, level_tables, predict_at
from .spacing import SigmaStepOptions


class DPM2Ancestral(SigmaSpaceScheduler):
    """Second-order ODE steps with ancestral noise; stochastic, two model calls per step (one on
    the last)."""

    stochastic = True
    model_calls_per_step = 2
    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["dpm2-ancestral"] = "dpm2-ancestral"
        eta: float = Field(1.0, ge=0, description="Weight of the fresh noise: 1 is ancestral sampling, 0 is DPM-2.")

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): ``mid_step = sigma_mid - sigma``, ``down_step = sigma_down -
        sigma``, the model's timestep and input scale at ``sigma_mid``, the noise scale
        ``sigma_up`` and, where the signal scale is not 1, ``renoise``."""
        split = ancestral_split(schedule, sigmas, self.spec.eta)
        sigma, sigma_down = sigmas[:-1], split.pop("sigma_down")
        mid = torch.where(sigma_down > 0, sigma.log().lerp(sigma_down.log(), 0.5).exp(), sigma)  # (N,)
        return {**super().step_tables(sigmas, schedule), **split, **level_tables(schedule, mid, "mid"),
                "mid_step": mid - sigma, "down_step": sigma_down - sigma}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("dpm2-ancestral is stochastic: step() needs `noise` shaped like x")
        extra = self.tables(plan, "mid_step")
        prediction = self.predict(model, x, plan, i)
        d = self.derivative(plan, prediction)
        if i == len(plan) - 1:  # to sigma = 0: Euler, no noise
            return sfumato.StepResult(torch.addcmul(x, d, extra["down_step"][i]), prediction.x0, {})
        trial = predict_at(model, torch.addcmul(x, d, extra["mid_step"][i]), extra, "mid", i)
        x = torch.addcmul(x, self.derivative(plan, trial), extra["down_step"][i])  # DPM-2 to sigma_down
        if "renoise" in extra:
            x = x * extra["renoise"][i]
        return sfumato.StepResult(torch.addcmul(x, extra["sigma_up"][i], noise), prediction.x0, {})
