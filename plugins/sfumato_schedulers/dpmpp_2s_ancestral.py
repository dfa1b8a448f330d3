"""DPM-Solver++(2S) ancestral: a second-order single-step DPM-Solver++ step down to
``sigma_down`` followed by fresh noise up to ``sigma_next`` (k-diffusion's
``sample_dpmpp_2s_ancestral``; the WebUI's "DPM++ 2S a"; ComfyUI's ``dpmpp_2s_ancestral``).
Lu et al. 2022, https://arxiv.org/abs/2211.01095, Algorithm 1 with ``r = 1/2``; with
``h = log(sigma / sigma_down)``:

    sigma_mid = sqrt(sigma * sigma_down)                               (halfway in log sigma)
    x_mid     = (sigma_mid / sigma) x - expm1(-h/2) x0(x, sigma)
    x_down    = (sigma_down / sigma) x - expm1(-h) x0(x_mid, sigma_mid)
    x_next    = renoise * x_down + sigma_up * noise

The exponential integrator is written in k-diffusion's variable, which is exact for every
formulation's native sample (the ODE ``dx/dsigma = (x - x0) / sigma`` is the same); the split
and the renoising are ``ancestral_split``'s (``renoise`` is 1 for VP and EDM). diffusers'
``DPMSolverSinglestepScheduler`` (solver_order 2) is the deterministic relative, at ``eta = 0``
but with its own timestep pairing. The last step, to sigma = 0, is an Euler step with one model
call; where ``sigma_down`` is 0 before the end (flow matching's first step at ``eta >= 1``) the
midpoint is ``sigma`` itself, which makes the step k-diffusion's Euler step to 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

from .sigma_space import SigmaSpaceScheduler, ancestral_split, level_tables, predict_at
from .spacing import SigmaStepOptions


class DPMSolverPlusPlus2SAncestral(SigmaSpaceScheduler):
    """Second-order single-step with ancestral noise; stochastic, two model calls per step (one on
    the last)."""

    stochastic = True
    model_calls_per_step = 2
    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-2s-ancestral"] = "dpmpp-2s-ancestral"
        eta: float = Field(
            1.0, ge=0, description="Weight of the fresh noise: 1 is ancestral sampling, 0 is DPM-Solver++(2S).")

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): the two stages' ``sigma ratio`` and ``expm1`` factors, the
        model's timestep and input scale at ``sigma_mid``, ``down_step = sigma_down - sigma`` (the
        last step's Euler step), ``sigma_up`` and, where the signal scale is not 1, ``renoise``."""
        split = ancestral_split(schedule, sigmas, self.spec.eta)
        sigma, sigma_down = sigmas[:-1], split.pop("sigma_down")
        h = sigma.log() - sigma_down.log()  # (N,); inf where sigma_down = 0
        mid = torch.where(sigma_down > 0, (sigma.log() - h / 2).exp(), sigma)
        return {**super().step_tables(sigmas, schedule), **split, **level_tables(schedule, mid, "mid"),
                "mid_ratio": mid / sigma, "mid_expm1": torch.where(sigma_down > 0, (-h / 2).expm1(), 0.0),
                "down_ratio": sigma_down / sigma, "down_expm1": (-h).expm1(), "down_step": sigma_down - sigma}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("dpmpp-2s-ancestral is stochastic: step() needs `noise` shaped like x")
        extra = self.tables(plan, "mid_ratio")
        prediction = self.predict(model, x, plan, i)
        if i == len(plan) - 1:  # to sigma = 0: Euler, no noise
            return sfumato.StepResult(torch.addcmul(x, self.derivative(plan, prediction), extra["down_step"][i]),
                                      prediction.x0, {})
        x_mid = extra["mid_ratio"][i] * x - extra["mid_expm1"][i] * prediction.x0
        trial = predict_at(model, x_mid, extra, "mid", i)
        x = extra["down_ratio"][i] * x - extra["down_expm1"][i] * trial.x0  # DPM-Solver++(2S) to sigma_down
        if "renoise" in extra:
            x = x * extra["renoise"][i]
        return sfumato.StepResult(torch.addcmul(x, extra["sigma_up"][i], noise), prediction.x0, {})
