"""Latent consistency model sampling (Luo et al. 2023, "Latent Consistency Models",
https://arxiv.org/abs/2310.04378, Algorithm 3; diffusers' ``LCMScheduler``; ComfyUI's and the
WebUI's "LCM"). For LCM-distilled models only (LCM, LCM-LoRA, SDXL-LCM, ...): their network is a
consistency function, trained with the boundary-condition scalings below and a few-step
schedule; any other model gives blurred samples.

Each step maps the sample straight to the data with the consistency function and noises that
afresh to the next planned timestep (the last step returns it):

    x0     = the model's x0 at (x_t, t)                          (clipped / thresholded if asked)
    D      = c_out(t) x0 + c_skip(t) x_t,   c_skip = s^2 / ((k t)^2 + s^2),  c_out = k t / sqrt((k t)^2 + s^2)
    x_next = sqrt(a_next) D + sqrt(1 - a_next) noise              (a = alpha_bar; s = 0.5, k = timestep_scaling)

The timesteps are diffusers' LCM schedule: the distillation's ``original_inference_steps``
timesteps ``T // original * j - 1`` (j = 1 ... original), of which ``steps`` evenly from the
noisiest. The sampler works on the variance-preserving sample, like DDIM, so it runs on every
formulation through its ``alpha_bar``. Image-to-image keeps the last steps of the plan (as every
sfumato scheduler does), where diffusers' ``set_timesteps(strength=...)`` re-spaces a shortened
schedule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

import sfumato

from .spacing import keep_strength
from .thresholding import ThresholdingOptions, threshold_x0
from .variance_preserving import variance_preserving_plan

#: The consistency models' data standard deviation in the boundary condition (diffusers' value).
SIGMA_DATA = 0.5


class LCM(sfumato.Scheduler):
    """Multistep consistency sampling; stochastic, one model call per step."""

    stochastic = True

    class Spec(sfumato.ComponentSpec, ThresholdingOptions):
        type: Literal["lcm"] = "lcm"
        steps: int = Field(4, ge=1, description="Number of sampling steps (at most original_inference_steps).")
        original_inference_steps: int = Field(
            50, ge=1, description="The distillation schedule's number of timesteps, from which the steps are taken "
            "(50 for the published LCM models).")
        timestep_scaling: float = Field(
            10.0, gt=0, description="k of the boundary-condition scalings c_skip and c_out at k * t (10 for the "
            "published LCM models).")

    def plan(self, schedule, steps=None, strength=1.0):
        timesteps = distillation_timesteps(schedule.num_timesteps, steps or self.spec.steps,
                                           self.spec.original_inference_steps, "lcm")
        previous = np.append(timesteps[1:], -1)  # the last step returns D
        plan = variance_preserving_plan(schedule, timesteps, previous, 1.0)
        scaled = plan.timesteps.double() * self.spec.timestep_scaling
        a_next = plan.extra["alpha_bar_prev"]
        plan.extra.update(
            c_skip=(SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)).float(),
            c_out=(scaled / (scaled**2 + SIGMA_DATA**2).sqrt()).float(),
            signal=a_next.sqrt(), noise=(1 - a_next).sqrt(),
        )
        return keep_strength(plan, strength)

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("lcm is stochastic: step() needs `noise` shaped like x")
        x0 = threshold_x0(model(x, plan.timesteps[i].expand(x.shape[0])).x0, self.spec)
        denoised = plan.extra["c_out"][i] * x0 + plan.extra["c_skip"][i] * x
        if i == len(plan) - 1:
            return sfumato.StepResult(denoised, denoised, {})
        return sfumato.StepResult(plan.extra["signal"][i] * denoised + plan.extra["noise"][i] * noise, denoised, {})


def distillation_timesteps(num_timesteps: int, steps: int, original: int, sampler: str) -> np.ndarray:
    """diffusers' LCM and TCD timesteps (integers, decreasing): ``steps`` evenly from the noisiest
    of the distillation schedule's ``original`` timesteps ``T // original * j - 1``; a
    ``SpecError`` for more steps than that schedule has or a schedule longer than the model's."""
    if original > num_timesteps:
        raise sfumato.SpecError(
            f"[scheduler] original_inference_steps = {original} is more than the model's {num_timesteps} "
            "training timesteps; use at most that many")
    if steps > original:
        raise sfumato.SpecError(
            f"[scheduler] steps = {steps}: {sampler} takes at most original_inference_steps = {original} steps "
            "(the distillation schedule it picks them from); use fewer steps")
    origin = np.arange(1, original + 1) * (num_timesteps // original) - 1  # (original,)
    return origin[::-1][np.floor(np.linspace(0, original, steps, endpoint=False)).astype(np.int64)]
