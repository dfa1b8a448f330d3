"""DPM-Solver++(2M) SDE (Lu et al. 2022, https://arxiv.org/abs/2211.01095; k-diffusion's
``sample_dpmpp_2m_sde``; diffusers' ``DPMSolverMultistepScheduler`` with ``algorithm_type =
"sde-dpmsolver++"``; the WebUI's "DPM++ 2M SDE"; ComfyUI's ``dpmpp_2m_sde`` and
``dpmpp_2m_sde_heun``), with Brownian-tree noise.

On the variance-exploding sample ``x / alpha = x0 + s eps`` (``s = sigma / alpha``; the half
log-SNR ``lambda = -log s``, ``h = lambda_next - lambda``, ``H = (1 + eta) h``), with ``D`` this
step's x0 and ``D_1`` the last step's, taken ``h_1`` before (``r = h_1 / h``), ending at
``alpha_next (x_next / alpha_next)``:

    x_next = (sigma_next / sigma) e^(-eta h) x + alpha_next (1 - e^-H) D
             + alpha_next c (D - D_1) / r + sigma_next sqrt(1 - e^(-2 eta h)) noise
    c = (1 - e^-H) / 2                 (solver_type "midpoint")
    c = (e^-H - 1) / H + 1             (solver_type "heun")

The first step has no ``D_1``; the last, to sigma = 0, returns ``D``. ``eta = 0`` is the ODE
solver (DPM-Solver++(2M) with the midpoint form). For VP and EDM (``alpha = 1``) this is
k-diffusion's arithmetic; for flow matching ComfyUI's half-log-SNR form, whose first step from
pure noise (``s = inf``) takes its exact limit (``x_next = alpha_next D + sigma_next noise``).
The noise is the increment of one Brownian path between the step's native sigmas
(``noise_levels``), as k-diffusion's ``BrownianTreeNoiseSampler`` gives it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

import sfumato

from .multistep import MultistepSolver, history, remember
from .sigma_space import variance_exploding_levels
from .spacing import SigmaStepOptions


class DPMSolverPlusPlus2MSDE(MultistepSolver):
    """Second-order multistep SDE solver; stochastic (at ``eta > 0``), one model call per step."""

    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-2m-sde"] = "dpmpp-2m-sde"
        eta: float = Field(
            1.0, ge=0, description="Weight of the fresh noise: 1 is the SDE solver, 0 is its ODE (DPM-Solver++(2M)).")
        solver_type: Literal["midpoint", "heun"] = Field(
            "midpoint", description="The second-order correction: midpoint (the WebUI's and ComfyUI's default) "
            "or heun (ComfyUI's dpmpp_2m_sde_heun)."
        )

    def __init__(self, spec):
        super().__init__(spec)
        self.stochastic = spec.eta > 0

    def second_order_form(self) -> str:
        """The form of the second-order correction: "midpoint" or "heun"."""
        return self.spec.solver_type

    def step_tables(self, sigmas, schedule):
        """Adds ``sde_x`` and ``sde_noise`` ``[N]`` (the weights of ``x`` and of the noise) and
        ``sde_weights`` ``[N, order, order]`` (of this and the past steps' x0 in each order's
        update; ``sde_dpm_solver_weights``)."""
        tables = sde_dpm_solver_weights(sigmas, schedule, self.spec.eta, self.order, self.second_order_form())
        return {**super().step_tables(sigmas, schedule), **tables}

    def noise_levels(self, plan):
        """``[N, 2]``: each step's ``sigma`` and ``sigma_next`` (the last step, which adds no noise,
        spans nothing): the noise is one Brownian path's increments."""
        levels = torch.stack([plan.sigmas[:-1], plan.sigmas[1:]], dim=1)
        levels[-1] = plan.sigmas[-2]
        return levels

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError(f"{self.type_name()} is stochastic: step() needs `noise` shaped like x")
        tables = self.tables(plan, "sde_weights")
        x0 = self.predict(model, x, plan, i).x0
        order = 1 if i == len(plan) - 1 else min(i + 1, self.order)  # the last step returns x0
        outputs = [x0, *history(carry, "x0_", min(i, self.order - 1))]
        weights = tables["sde_weights"][i, order - 1]  # (order,)
        x = tables["sde_x"][i] * x
        for j in range(order):
            x = torch.addcmul(x, weights[j], outputs[j])
        if self.stochastic:
            x = torch.addcmul(x, tables["sde_noise"][i], noise)
        return sfumato.StepResult(x, x0, remember(outputs, "x0_", self.order - 1))


def sde_dpm_solver_weights(sigmas: Tensor, schedule: sfumato.Formulation, eta: float, order: int,
                           second_order: str) -> dict[str, Tensor]:
    """The SDE-DPM-Solver++ update of every step, as weights (float32, computed in float64):

    ``x_next = sde_x[i] x + sum_j sde_weights[i, k - 1, j] D_j + sde_noise[i] noise`` for order
    ``k``, ``D_j`` the x0 of step ``i - j``. Order 2 is ``second_order``'s correction (module
    docstring); order 3 is k-diffusion's ``sample_dpmpp_3m_sde``: with ``r0 = h_1 / h``,
    ``r1 = h_2 / h``, ``phi_2 = (e^-H - 1) / H + 1`` and ``phi_3 = phi_2 / H - 1/2``,

        d1_0 = (D - D_1) / r0,   d1_1 = (D_1 - D_2) / r1
        + alpha_next (phi_2 (d1_0 + (d1_0 - d1_1) r0 / (r0 + r1)) - phi_3 (d1_0 - d1_1) / (r0 + r1))

    Orders a step cannot take (no earlier levels; an infinite step, to sigma = 0 or from
    ``alpha = 0``) keep weight 0 beyond the first.
    """
    sigmas64 = sigmas.double()
    with np.errstate(divide="ignore"):
        lambdas = -np.log(variance_exploding_levels(schedule, sigmas64).numpy())  # (N + 1,); +-inf at the ends
    alpha_next = schedule.alpha(sigmas64[1:]).numpy()
    sigma, sigma_next = sigmas64[:-1].numpy(), sigmas64[1:].numpy()
    steps = len(sigma)
    weights, x_weight, noise_weight = np.zeros((steps, order, order)), np.zeros(steps), np.zeros(steps)
    for i in range(steps):
        h = lambdas[i + 1] - lambdas[i]
        big_h = (1 + eta) * h
        one = -np.expm1(-big_h)  # 1 - e^-H
        x_weight[i] = sigma_next[i] / sigma[i] * (np.exp(-eta * h) if eta else 1.0)
        noise_weight[i] = sigma_next[i] * np.sqrt(-np.expm1(-2 * eta * h)) if eta else 0.0
        weights[i, :, 0] = one
        if not np.isfinite(h):
            continue
        phi_2 = np.expm1(-big_h) / big_h + 1
        if i >= 1 and order >= 2:
            r0 = (lambdas[i] - lambdas[i - 1]) / h
            c = one / 2 if second_order == "midpoint" else phi_2
            weights[i, 1, :2] = one + c / r0, -c / r0
        if i >= 2 and order >= 3:
            r1 = (lambdas[i - 1] - lambdas[i - 2]) / h
            phi_3 = phi_2 / big_h - 0.5
            p = phi_2 * (1 + r0 / (r0 + r1)) - phi_3 / (r0 + r1)  # the weight of d1_0
            q = -phi_2 * r0 / (r0 + r1) + phi_3 / (r0 + r1)  # ... of d1_1
            weights[i, 2] = one + p / r0, -p / r0 + q / r1, -q / r1
    weights *= alpha_next[:, None, None]
    return {name: torch.from_numpy(values).to(torch.float32)
            for name, values in (("sde_x", x_weight), ("sde_weights", weights), ("sde_noise", noise_weight))}
