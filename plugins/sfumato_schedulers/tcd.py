"""Trajectory consistency distillation sampling (Zheng et al. 2024, "Trajectory Consistency
Distillation", https://arxiv.org/abs/2402.19159, Algorithm 4, strategic stochastic sampling;
diffusers' ``TCDScheduler``). For TCD-distilled models (TCD-LoRA and the like), whose network
predicts the trajectory's x0 and eps.

From timestep ``t`` to the next planned timestep ``t'`` each step goes deterministically (a DDIM
move along the prediction) to the intermediate ``s = floor((1 - gamma) t')`` and forward-noises
from ``s`` back up to ``t'``:

    x_s    = sqrt(a_s) x0 + sqrt(1 - a_s) eps                                (a = alpha_bar)
    x_next = sqrt(a_next / a_s) x_s + sqrt(1 - a_next / a_s) noise

``gamma = 0`` is deterministic (DDIM on the consistency model's predictions); ``gamma = 1`` maps
to the data and renoises every step (multistep consistency sampling, as LCM). The timesteps are
LCM's (``distillation_timesteps``). As in diffusers, the last step goes to timestep 0 and
returns ``x_s`` there, so a run ends at the model's lowest noise level rather than at 0. The
sampler works on the variance-preserving sample, so it runs on every formulation through its
``alpha_bar``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .lcm import distillation_timesteps
from .spacing import keep_strength
from .variance_preserving import variance_preserving_plan


class TCD(sfumato.Scheduler):
    """Strategic stochastic sampling; stochastic at ``gamma > 0``, one model call per step."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["tcd"] = "tcd"
        steps: int = Field(4, ge=1, description="Number of sampling steps (at most original_inference_steps).")
        gamma: float = Field(
            0.3, ge=0, le=1, description="The stochasticity of each step (diffusers' step(eta=...)): 0 is "
            "deterministic, 1 renoises from the data every step; higher values give less detail.")
        original_inference_steps: int = Field(
            50, ge=1, description="The distillation schedule's number of timesteps, from which the steps are taken.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.gamma > 0

    def plan(self, schedule, steps=None, strength=1.0):
        timesteps = distillation_timesteps(schedule.num_timesteps, steps or self.spec.steps,
                                           self.spec.original_inference_steps, "tcd")
        previous = np.append(timesteps[1:], 0)  # the last step lands on timestep 0
        plan = variance_preserving_plan(schedule, timesteps, previous, 1.0)
        intermediate = torch.from_numpy(np.floor((1 - self.spec.gamma) * previous).astype(np.int64))
        a_s, a_next = schedule.alphas_cumprod[intermediate], plan.extra["alpha_bar_prev"]  # (N,)
        plan.extra.update(x0_coef=a_s.sqrt(), eps_coef=(1 - a_s).sqrt(), signal=(a_next / a_s).sqrt(),
                          noise=(1 - a_next / a_s).sqrt())
        return keep_strength(plan, strength)

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError("tcd with gamma > 0 is stochastic: step() needs `noise` shaped like x")
        prediction = model(x, plan.timesteps[i].expand(x.shape[0]))
        extra = plan.extra
        x = extra["x0_coef"][i] * prediction.x0 + extra["eps_coef"][i] * prediction.eps
        if self.stochastic and i < len(plan) - 1:
            x = extra["signal"][i] * x + extra["noise"][i] * noise
        return sfumato.StepResult(x, prediction.x0, {})
