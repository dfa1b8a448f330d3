"""Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without churn).

An Euler step to ``sigma_next`` gives a trial point; the model's derivative there is averaged with
the first one (the trapezoidal rule), so each step costs two model calls and is second order.
The last step, to sigma = 0 where the derivative is undefined, is a plain Euler step: like
k-diffusion's ``sample_heun`` and diffusers' ``HeunDiscreteScheduler``, N steps make 2N - 1 calls.
With ``s_churn > 0`` each step first adds noise up to ``sigma_hat`` and steps from there
(``churn``: Algorithm 2 in full, as k-diffusion's ``sample_heun`` computes it).
"""

from __future__ import annotations

from typing import Literal

import sfumato

from .churn import ChurningScheduler, ChurnOptions
from .spacing import SigmaStepOptions


class Heun(ChurningScheduler):
    """Second-order, two model calls per step (one on the last); deterministic unless it churns."""

    model_calls_per_step = 2
    order = 2

    class Spec(SigmaStepOptions, ChurnOptions):
        type: Literal["heun"] = "heun"

    def step(self, model, x, plan, i, carry=None, noise=None):
        x, prediction, dsigma = self.start(model, x, plan, i, noise)
        d = self.derivative(plan, prediction)  # dx/dsigma = (x - x0) / sigma
        x_euler = x + d * dsigma
        if i == len(plan) - 1:
            return sfumato.StepResult(x_euler, prediction.x0, {})
        trial = self.predict(model, x_euler, plan, i + 1)
        x = x + (d + self.derivative(plan, trial)) / 2 * dsigma
        return sfumato.StepResult(x, trial.x0, {})
