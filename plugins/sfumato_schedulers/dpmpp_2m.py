"""DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, Algorithm 2), the
multistep second-order solver of the diffusion ODE in data (x0) prediction.

With ``lambda = -log(sigma)`` (the half log-SNR) and ``h = lambda_next - lambda``:

    D      = (1 + 1/(2r)) x0 - 1/(2r) x0_prev,   r = h_prev / h
    x_next = (sigma_next / sigma) x - expm1(-h) D

The first step has no history and the last (to sigma = 0) needs none, so both use ``D = x0``
(first order). The previous x0 travels in ``carry["denoised"]``. This is k-diffusion's
``sample_dpmpp_2m``; diffusers' ``DPMSolverMultistepScheduler`` (algorithm_type "dpmsolver++",
solver_order 2) computes the same update on the variance-preserving sample.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

import sfumato

from .sigma_space import SigmaSpaceScheduler
from .spacing import SigmaStepOptions, spaced_timesteps


class DPMSolverPlusPlus2M(SigmaSpaceScheduler):
    """Second-order multistep, deterministic, one model call per step."""

    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-2m"] = "dpmpp-2m"

    def spaced_timesteps(self, num_train_timesteps: int, steps: int) -> np.ndarray:
        """As diffusers' DPMSolverMultistepScheduler: ``linspace`` and ``leading`` space N + 1
        integer timesteps and drop the final one, so the last step starts above timestep 0."""
        spacing, offset = self.spec.spacing, self.spec.steps_offset
        if spacing == "trailing":
            return spaced_timesteps(num_train_timesteps, steps, spacing)
        if spacing == "leading":  # the offset applies after dropping timestep 0
            return spaced_timesteps(num_train_timesteps, steps + 1, spacing)[:-1] + offset
        return spaced_timesteps(num_train_timesteps, steps + 1, spacing).round()[:-1]

    def init_noise_sigma(self, sigmas, schedule, spaced):
        """Unit-variance noise in the variance-preserving space, ``sqrt(alpha_0^2 + sigma_0^2)`` for
        every spacing (in float32, as diffusers starts DPM-Solver)."""
        return float((schedule.alpha(sigmas[0]) ** 2 + sigmas[0] ** 2).sqrt())

    def step_tables(self, sigmas, schedule):
        """Adds, per step, ``sigma_next / sigma``, ``expm1(-h)`` and the two weights of ``D``
        (``1 + 1/(2r)`` and ``1/(2r)``; the first step's are unused)."""
        log_sigmas = sigmas.log()  # (N + 1,); -inf for the final 0
        h = log_sigmas[:-1] - log_sigmas[1:]  # (N,)
        r = torch.cat([h.new_ones(1), (log_sigmas[:-2] - log_sigmas[1:-1]) / h[1:]])  # (N,)
        return {**super().step_tables(sigmas, schedule), "sigma_ratio": sigmas[1:] / sigmas[:-1], "expm1": (-h).expm1(),
                "weight": 1 + 1 / (2 * r), "previous_weight": 1 / (2 * r)}

    def step(self, model, x, plan, i, carry=None, noise=None):
        x0 = self.predict(model, x, plan, i).x0
        tables = plan.extra if plan.extra and "expm1" in plan.extra else self.step_tables(plan.sigmas, plan.schedule)
        denoised = x0
        if carry and i < len(plan) - 1:
            denoised = tables["weight"][i] * x0 - tables["previous_weight"][i] * carry["denoised"]
        x = tables["sigma_ratio"][i] * x - tables["expm1"][i] * denoised
        return sfumato.StepResult(x, x0, {"denoised": x0})
