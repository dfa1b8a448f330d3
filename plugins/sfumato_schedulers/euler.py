"""Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2).

    d = (x - x0) / sigma                      (dx/dsigma; eps for VP, the velocity for flow)
    x_next = x + d * (sigma_next - sigma)

The simplest sampler in sigma space; k-diffusion's ``sample_euler``, diffusers'
``EulerDiscreteScheduler``, the WebUI's "Euler". With ``s_churn > 0`` each step first adds noise
up to ``sigma_hat`` and steps from there (``churn``: Algorithm 2's stochastic sampler, as
k-diffusion computes it; diffusers' ``step(s_churn=...)`` differs: its model output was computed
before the noise was added).
"""

from __future__ import annotations

from typing import Literal

import torch

import sfumato

from .churn import ChurningScheduler, ChurnOptions
from .spacing import SigmaStepOptions


class Euler(ChurningScheduler):
    """First-order, one model call per step; deterministic unless it churns."""

    class Spec(SigmaStepOptions, ChurnOptions):
        type: Literal["euler"] = "euler"

    def step(self, model, x, plan, i, carry=None, noise=None):
        x, prediction, dsigma = self.start(model, x, plan, i, noise)
        d = self.derivative(plan, prediction)  # dx/dsigma = (x - x0) / sigma
        return sfumato.StepResult(torch.addcmul(x, d, dsigma), prediction.x0, {})
