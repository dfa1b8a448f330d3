"""Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn).

    d = (x - x0) / sigma = eps                (dx/dsigma)
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
        return sfumato.StepResult(torch.addcmul(x, prediction.eps, self.dsigma(plan, i)), prediction.x0, {})
