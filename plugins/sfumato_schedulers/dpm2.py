"""DPM-2: the second-order DPM-Solver step (Lu et al. 2022, https://arxiv.org/abs/2206.00927) as
Karras et al. 2022 wrote it, a midpoint method in sigma with the midpoint taken halfway in log
sigma (k-diffusion's ``sample_dpm_2``; diffusers' ``KDPM2DiscreteScheduler``; the WebUI's "DPM2"):

    sigma_mid = sqrt(sigma * sigma_next)
    x_mid     = x + d(x, sigma) (sigma_mid - sigma)          (d = dx/dsigma = (x - x0) / sigma)
    x_next    = x + d(x_mid, sigma_mid) (sigma_next - sigma)

The last step, to sigma = 0, is an Euler step with one model call (N steps make 2N - 1 calls).
With ``s_churn > 0`` each step first adds noise up to ``sigma_hat`` and steps from there
(``churn``, as k-diffusion's ``sample_dpm_2`` does).
"""

from __future__ import annotations

from typing import Literal

import torch

import sfumato

from .churn import ChurningScheduler, ChurnOptions
from .sigma_space import level_tables, predict_at
from .spacing import SigmaStepOptions


class DPM2(ChurningScheduler):
    """Second-order, two model calls per step (one on the last); deterministic unless it churns."""

    model_calls_per_step = 2
    order = 2

    class Spec(SigmaStepOptions, ChurnOptions):
        type: Literal["dpm2"] = "dpm2"

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): ``mid_step = sigma_mid - sigma`` and the model's timestep and
        input scale at ``sigma_mid`` (from ``sigma_hat`` when the sampler churns). The last step's
        midpoint is never visited: the step's start stands in for it, keeping the tables finite."""
        tables = super().step_tables(sigmas, schedule)
        start, sigma_next = tables.get("sigma_hat", sigmas[:-1]), sigmas[1:]
        mid = torch.where(sigma_next > 0, (start * sigma_next).sqrt(), start)  # (N,)
        return {**tables, **level_tables(schedule, mid, "mid"), "mid_step": mid - start}

    def step(self, model, x, plan, i, carry=None, noise=None):
        tables = self.tables(plan, "mid_step")
        x, prediction, dsigma = self.start(model, x, plan, i, noise)
        d = self.derivative(plan, prediction)
        if i == len(plan) - 1:  # to sigma = 0: Euler
            return sfumato.StepResult(torch.addcmul(x, d, dsigma), prediction.x0, {})
        trial = predict_at(model, torch.addcmul(x, d, tables["mid_step"][i]), tables, "mid", i)
        return sfumato.StepResult(torch.addcmul(x, self.derivative(plan, trial), dsigma), prediction.x0, {})
