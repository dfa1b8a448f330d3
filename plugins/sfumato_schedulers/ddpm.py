"""DDPM ancestral sampling (Ho et al. 2020, https://arxiv.org/abs/2006.11239).

Each step samples ``x_s ~ q(x_s | x_t, x0)``, the Gaussian posterior of Eq. 6-7 with the model's
x0 in place of the true one, between consecutive planned timesteps ``t > s``:

    mean = sqrt(a_s) (1 - a_t/a_s) / (1 - a_t) * x0  +  sqrt(a_t/a_s) (1 - a_s) / (1 - a_t) * x_t
    var  = (1 - a_s) / (1 - a_t) * (1 - a_t/a_s)     (fixed_small, the posterior variance)
           or 1 - a_t/a_s                            (fixed_large, beta_t)

with ``a = alpha_bar``. No noise is added at timestep 0. Matches diffusers' ``DDPMScheduler``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .spacing import StepOptions, keep_strength, spaced_timesteps
from .thresholding import ThresholdingOptions, threshold_x0
from .variance_preserving import variance_preserving_plan


class DDPM(sfumato.Scheduler):
    """Ancestral sampling from the DDPM posterior; stochastic, one model call per step."""

    stochastic = True

    class Spec(StepOptions, ThresholdingOptions):
        type: Literal["ddpm"] = "ddpm"
        steps: int = Field(1000, ge=1, description="Number of sampling steps (at most the training timesteps).")
        variance: Literal["fixed_small", "fixed_large"] = Field(
            "fixed_small",
            description="Step variance: fixed_small, the posterior variance (best for the x0 "
            "bound, Ho et al. 2020 Sec. 3.2), or fixed_large, beta_t (better log-likelihood).",
        )

    def plan(self, schedule, steps=None, strength=1.0):
        timesteps = spaced_timesteps(
            schedule.num_timesteps, steps or self.spec.steps, self.spec.spacing, self.spec.steps_offset
        ).round()
        previous = np.append(timesteps[1:], -1)  # each step lands on the next planned timestep
        plan = variance_preserving_plan(schedule, timesteps, previous, 1.0)
        plan.extra.update(self.step_tables(plan.timesteps, plan.extra["alpha_bar"], plan.extra["alpha_bar_prev"]))
        return keep_strength(plan, strength)

    def step_tables(self, t, a_t, a_s) -> dict[str, torch.Tensor]:
        """The posterior's coefficients for every step at once (``[N]`` each), so a step only
        indexes them: ``mean = x0_coef * x0 + xt_coef * x_t`` and ``std``."""
        alpha_t = a_t / a_s  # the alpha of this (possibly multi-timestep) transition
        beta_t = 1 - alpha_t
        if self.spec.variance == "fixed_small":
            variance = ((1 - a_s) / (1 - a_t) * beta_t).clamp(min=1e-20)
        else:
            variance = beta_t
        return {
            "x0_coef": a_s.sqrt() * beta_t / (1 - a_t),
            "xt_coef": alpha_t.sqrt() * (1 - a_s) / (1 - a_t),
            "std": torch.where(t > 0, variance.sqrt(), torch.zeros_like(variance)),  # none at timestep 0
        }

    def step(self, model, x, plan, i, carry=None, noise=None):
        if noise is None:
            raise sfumato.SamplingError("ddpm is stochastic: step() needs `noise` shaped like x")
        x0 = threshold_x0(model(x, plan.timesteps[i].expand(x.shape[0])).x0, self.spec)
        extra = plan.extra
        mean = extra["x0_coef"][i] * x0 + extra["xt_coef"][i] * x
        return sfumato.StepResult(torch.addcmul(mean, extra["std"][i], noise), x0, {})
