"""DPM-Solver++(3M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095), the multistep third-order
solver of the diffusion ODE in data (x0) prediction: diffusers' ``DPMSolverMultistepScheduler``
with ``algorithm_type = "dpmsolver++"`` and ``solver_order = 3`` (the WebUI's "DPM++ 3M" is its
SDE form, ``dpmpp-3m-sde``).

With ``lambda = -log(sigma)``, ``h = lambda_next - lambda``, ``e = expm1(-h)`` and the x0 of this
step and the two before, ``m0, m1, m2``, at step sizes ``h_0`` and ``h_1`` before this one
(``r0 = h_0 / h``, ``r1 = h_1 / h``):

    D1_0 = (m0 - m1) / r0,   D1_1 = (m1 - m2) / r1
    D1   = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),   D2 = (D1_0 - D1_1) / (r0 + r1)
    x_next = (sigma_next / sigma) x - e m0 + (e / h + 1) D1 - ((e + h) / h^2 - 1/2) D2

Orders warm up (first order, then second: DPM-Solver++(2M)'s midpoint step) and, as in diffusers,
the last step, to sigma = 0, is first order (the model's x0) and with fewer than 15 steps the one
before it second order. The update is linear in ``x, m0, m1, m2``, so the plan holds its weights
for every step and order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

import sfumato

from .multistep import MultistepSolver, dpm_solver_order, half_log_snr, history, remember
from .spacing import SigmaStepOptions


class DPMSolverPlusPlus3M(MultistepSolver):
    """Third-order multistep, deterministic, one model call per step."""

    order = 3

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-3m"] = "dpmpp-3m"

    def step_tables(self, sigmas, schedule):
        """Adds ``sigma_ratio`` ``[N]`` and ``dpm_weights`` ``[N, 3, 3]``: the weights of
        ``m0, m1, m2`` in step ``i``'s update of each order."""
        return {**super().step_tables(sigmas, schedule), "sigma_ratio": sigmas[1:] / sigmas[:-1],
                "dpm_weights": dpm_solver_weights(sigmas)}

    def step(self, model, x, plan, i, carry=None, noise=None):
        tables = self.tables(plan, "dpm_weights")
        x0 = self.predict(model, x, plan, i).x0
        order = dpm_solver_order(i, len(plan), self.order)
        outputs = [x0, *history(carry, "x0_", min(i, self.order - 1))]
        weights = tables["dpm_weights"][i, order - 1]  # (3,)
        x = tables["sigma_ratio"][i] * x
        for j in range(order):
            x = torch.addcmul(x, weights[j], outputs[j])
        return sfumato.StepResult(x, x0, remember(outputs, "x0_", self.order - 1))


def dpm_solver_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` float32: entry ``[i, k - 1, j]`` is the weight of the x0 of step ``i - j`` in
    DPM-Solver++'s order-``k`` update of step ``i`` (orders a step cannot take for lack of earlier
    levels, and orders above 1 for the step to sigma = 0, are 0). Computed in float64."""
    lambdas = half_log_snr(sigmas)  # (N + 1,); inf for the final 0
    steps = len(lambdas) - 1
    weights = np.zeros((steps, 3, 3))
    for i in range(steps):
        h = lambdas[i + 1] - lambdas[i]
        e = np.expm1(-h)
        weights[i, 0, 0] = -e
        if not np.isfinite(h):  # to sigma = 0: only the first order is defined
            continue
        if i >= 1:
            r0 = (lambdas[i] - lambdas[i - 1]) / h
            weights[i, 1, :2] = -e - 0.5 * e / r0, 0.5 * e / r0
        if i >= 2:
            r1 = (lambdas[i - 1] - lambdas[i - 2]) / h
            b, c = e / h + 1, -((e + h) / h**2 - 0.5)  # the weights of D1 and D2
            p = b * (1 + r0 / (r0 + r1)) + c / (r0 + r1)  # ... of D1_0
            q = -b * r0 / (r0 + r1) - c / (r0 + r1)  # ... of D1_1
            weights[i, 2] = -e + p / r0, -p / r0 + q / r1, -q / r1
    return torch.from_numpy(weights).to(torch.float32)
