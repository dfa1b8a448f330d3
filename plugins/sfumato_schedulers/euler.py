"""Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn).

    d = (x - x0) / sigma                      (dx/dsigma; eps for VP, the velocity for flow)
    x_next = x + d * (sigma_next - sigma)

The simplest sampler in sigma space; k-diffusion's ``sample_euler``, diffusers'
``EulerDiscreteScheduler``, the WebUI's "Euler".
"""

from __future__ import annotations

from typing import Literal

import torch

import sfumato

from .sigma_space import SigmaSpaceScheduler
from .spacing import SigmaStepOptions


class Euler(SigmaSpaceScheduler):
    """First-order, deterministic, one model call per step."""

    class Spec(SigmaStepOptions):
        type: Literal["euler"] = "euler"

    def step(self, model, x, plan, i, carry=None, noise=None):
        prediction = self.predict(model, x, plan, i)
        d = self.derivative(plan, prediction)  # dx/dsigma = (x - x0) / sigma
        return sfumato.StepResult(torch.addcmul(x, d, self.dsigma(plan, i)), prediction.x0, {})
