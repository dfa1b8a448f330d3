"""RES multistep: the second-order multistep exponential integrator of Zhang et al. 2023
("Improved order analysis and design of exponential integrator for diffusion models",
https://arxiv.org/abs/2308.02157) in ComfyUI's form, ``sample_res_multistep`` (its
``res_multistep`` sampler, ``eta = 0``).

With ``lambda = -log(sigma)``, ``h = lambda_next - lambda``, ``phi_1(z) = expm1(z) / z``,
``phi_2(z) = (phi_1(z) - 1) / z`` and ``c2 = (lambda_previous - lambda) / h`` (negative: the last
step's level lies behind):

    x_next = (sigma_next / sigma) x + h ((phi_1(-h) - phi_2(-h) / c2) x0 + phi_2(-h) / c2 x0_previous)

The first step, without history, and the last, to sigma = 0, are Euler steps. Unlike DPM-Solver++
(2M), whose weights come from a finite difference at the midpoint, the RES weights satisfy the
second-order conditions of the exponential integrator exactly for any step ratio.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

import sfumato

from .sigma_space import SigmaSpaceScheduler
from .spacing import SigmaStepOptions


class RESMultistep(SigmaSpaceScheduler):
    """Second-order multistep, deterministic, one model call per step."""

    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["res-multistep"] = "res-multistep"

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): ``sigma_ratio``, and the weights ``x0_weight`` and
        ``previous_weight`` of the two x0 (0 where a step has no earlier level or ends at 0)."""
        levels = sigmas.double().numpy()  # (N + 1,)
        x0_weight, previous_weight = np.zeros(len(levels) - 1), np.zeros(len(levels) - 1)
        for i in range(1, len(levels) - 1):
            if levels[i + 1] == 0:
                continue
            h = np.log(levels[i] / levels[i + 1])
            c2 = np.log(levels[i] / levels[i - 1]) / h
            phi_1 = np.expm1(-h) / -h
            phi_2 = (phi_1 - 1) / -h
            x0_weight[i], previous_weight[i] = h * (phi_1 - phi_2 / c2), h * phi_2 / c2
        return {**super().step_tables(sigmas, schedule), "sigma_ratio": sigmas[1:] / sigmas[:-1],
                "x0_weight": torch.from_numpy(x0_weight).float(),
                "previous_weight": torch.from_numpy(previous_weight).float()}

    def step(self, model, x, plan, i, carry=None, noise=None):
        tables = self.tables(plan, "x0_weight")
        prediction = self.predict(model, x, plan, i)
        if i == 0 or i == len(plan) - 1:  # Euler: no history yet, or the step to sigma = 0
            x = torch.addcmul(x, self.derivative(plan, prediction), self.dsigma(plan, i))
        else:
            x = torch.addcmul(tables["sigma_ratio"][i] * x, tables["x0_weight"][i], prediction.x0)
            x = torch.addcmul(x, tables["previous_weight"][i], carry["x0_1"])
        return sfumato.StepResult(x, prediction.x0, {"x0_1": prediction.x0})
