"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", https://arxiv.org/abs/2010.02502).

Eq. 12, from timestep t to the previous timestep s with ``a = alpha_bar``:

    x_s = sqrt(a_s) x0 + sqrt(1 - a_s - std^2) eps + std * noise
    std = eta * sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))

``eta = 0`` is the deterministic DDIM sampler; ``eta = 1`` has DDPM's step variance.

As in diffusers' ``DDIMScheduler``, the previous timestep is ``t - T // steps`` whatever the
spacing (for ``linspace`` it can differ from the next planned timestep), and below 0 it is
"clean": ``alpha_bar = 1``, or ``alpha_bar[0]`` with ``set_alpha_to_one = false`` (the setting of
Stable Diffusion 1.x configs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import sfumato

from .spacing import StepOptions, keep_strength, spaced_timesteps
from .thresholding import ThresholdingOptions, threshold_x0
from .variance_preserving import variance_preserving_plan


class DDIM(sfumato.Scheduler):
    """Denoising diffusion implicit models; deterministic at eta = 0, one model call per step."""

    class Spec(StepOptions, ThresholdingOptions):
        type: Literal["ddim"] = "ddim"
        eta: float = Field(0.0, ge=0, description="Noise weight: 0 is deterministic DDIM, 1 matches DDPM's variance.")
        set_alpha_to_one: bool = Field(
            True, description="The last step lands on alpha_bar = 1 (clean); false uses alpha_bar[0]."
        )

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.eta > 0

    def plan(self, schedule, steps=None, strength=1.0):
        steps = steps or self.spec.steps
        timesteps = spaced_timesteps(schedule.num_timesteps, steps, self.spec.spacing, self.spec.steps_offset).round()
        previous = timesteps - schedule.num_timesteps // steps
        final = 1.0 if self.spec.set_alpha_to_one else float(schedule.alphas_cumprod[0])
        plan = variance_preserving_plan(schedule, timesteps, previous, final)
        a_t, a_s = plan.extra["alpha_bar"], plan.extra["alpha_bar_prev"]  # (N,)
        std = self.spec.eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
        # Eq. 12's coefficients for every step at once; a step only indexes them.
        # clamped: where a_t = 0 (flow matching's pure noise, a zero-terminal-SNR schedule) eta = 1
        # makes 1 - a_s - std^2 exactly 0, and rounding must not turn it into sqrt(-0.0...1) = NaN
        plan.extra.update(x0_coef=a_s.sqrt(), eps_coef=(1 - a_s - std**2).clamp(min=0).sqrt(), std=std)
        return keep_strength(plan, strength)

    def step(self, model, x, plan, i, carry=None, noise=None):
        prediction = model(x, plan.timesteps[i].expand(x.shape[0]))
        x0 = threshold_x0(prediction.x0, self.spec)
        x = plan.extra["x0_coef"][i] * x0 + plan.extra["eps_coef"][i] * prediction.eps
        if self.stochastic:
            if noise is None:
                raise sfumato.SamplingError("ddim with eta > 0 is stochastic: step() needs `noise` shaped like x")
            x = x + plan.extra["std"][i] * noise
        return sfumato.StepResult(x, x0, {})
