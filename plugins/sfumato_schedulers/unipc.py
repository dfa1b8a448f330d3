"""UniPC (Zhao et al. 2023, https://arxiv.org/abs/2302.04867): a unified predictor-corrector
framework of multistep exponential integrators in data (x0) prediction: diffusers'
``UniPCMultistepScheduler`` (``predict_x0 = True``); ComfyUI's ``uni_pc`` (B(h) = bh1) and
``uni_pc_bh2``; the WebUI's "UniPC".

Step ``i`` calls the model once at ``x_i`` and then

1. corrects ``x_i`` (UniC, when ``i > 0``): it re-takes the previous step from ``x_{i-1}`` with the
   new x0 as one more interpolation point, one order higher, at no extra model call;
2. predicts ``x_{i+1}`` (UniP) from the corrected ``x_i`` with the x0 of this and earlier steps.

With ``lambda = -log(sigma)``, ``h = lambda_next - lambda`` and ``B(h) = -h`` (bh1) or
``expm1(-h)`` (bh2), both updates have the form

    x_next = (sigma_next / sigma) x - expm1(-h) m0 - B(h) sum_k rho_k (m_k - m0) / r_k

where ``r_k = (lambda_k - lambda) / h`` places the earlier x0 ``m_k`` and the weights ``rho`` solve
the order conditions of Eq. 8 of the paper (``rho = 1/2`` for the lowest orders). The orders
warm up from 1; as in diffusers (``lower_order_final``) the step ``N - k`` is at most of order
``k``, so the last step, to sigma = 0, returns the model's x0. The updates are linear in ``x`` and
the x0, so the plan holds their weights for every step and order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .multistep import MultistepSolver, half_log_snr, history, remember
from .spacing import SigmaStepOptions


class UniPC(MultistepSolver):
    """Multistep predictor-corrector of order 1-3 (one higher with the corrector), deterministic,
    one model call per step."""

    class Spec(SigmaStepOptions):
        type: Literal["unipc"] = "unipc"
        order: int = Field(2, ge=1, le=3, description="Order of the predictor (diffusers' solver_order); the "
                           "corrector adds one.")
        variant: Literal["bh1", "bh2"] = Field(
            "bh2", description="B(h) of the order conditions: bh1 (B(h) = h; the paper's choice for few steps and "
            "unconditional models) or bh2 (B(h) = e^h - 1; diffusers' default, for guided sampling).",
        )
        disable_corrector: list[int] = Field(
            [], description="Steps whose result is not corrected at the next step (diffusers' disable_corrector; "
            "[0] helps at large guidance scales).",
        )

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.order = spec.order + 1  # the corrector raises the predictor's order by one

    def step_tables(self, sigmas, schedule):
        """Adds ``sigma_ratio`` ``[N]``, ``predictor_weights`` ``[N, order, order]`` (the weights of
        ``m0 ... m_{k-1}`` in step ``i``'s order-``k`` prediction) and ``corrector_weights``
        ``[N, order, order + 1]`` (of the new x0, then ``m0 ... m_{k-1}``, in the order-``k``
        correction made at step ``i`` of the previous step's result)."""
        predictor, corrector = unipc_weights(sigmas, self.spec.order, self.spec.variant)
        return {**super().step_tables(sigmas, schedule), "sigma_ratio": sigmas[1:] / sigmas[:-1],
                "predictor_weights": predictor, "corrector_weights": corrector}

    def predictor_order(self, i: int, steps: int) -> int:
        """diffusers' rule: warm-up, and step ``N - k`` at most of order ``k`` (``lower_order_final``)."""
        return min(self.spec.order, steps - i, i + 1)

    def step(self, model, x, plan, i, carry=None, noise=None):
        tables = self.tables(plan, "predictor_weights")
        x0 = self.predict(model, x, plan, i).x0
        if i > 0 and i - 1 not in self.spec.disable_corrector:  # UniC: redo the last step with this x0
            order = self.predictor_order(i - 1, len(plan))
            weights = tables["corrector_weights"][i, order - 1]  # (order + 1,)
            x = tables["sigma_ratio"][i - 1] * carry["x_previous"]
            for j, output in enumerate([x0, *history(carry, "x0_", order)]):
                x = torch.addcmul(x, weights[j], output)
        outputs = [x0, *history(carry, "x0_", min(i, self.spec.order - 1))]
        order = self.predictor_order(i, len(plan))
        weights = tables["predictor_weights"][i, order - 1]  # (order,)
        x_next = tables["sigma_ratio"][i] * x
        for j in range(order):
            x_next = torch.addcmul(x_next, weights[j], outputs[j])
        return sfumato.StepResult(x_next, x0, {"x_previous": x, **remember(outputs, "x0_", self.spec.order)})


def unipc_weights(sigmas: torch.Tensor, max_order: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictor's ``[N, max_order, max_order]`` and the corrector's
    ``[N, max_order, max_order + 1]`` weights (see ``UniPC.step_tables``), computed in float64 as
    diffusers' ``multistep_uni_p_bh_update`` and ``multistep_uni_c_bh_update`` compute them."""
    lambdas = half_log_snr(sigmas)  # (N + 1,); inf for the final 0
    steps = len(lambdas) - 1
    predictor = np.zeros((steps, max_order, max_order))
    corrector = np.zeros((steps, max_order, max_order + 1))
    for i in range(steps):
        for order in range(1, min(i + 1, max_order) + 1):  # predict from step i to i + 1
            if order > 1 and not np.isfinite(lambdas[i + 1]):
                break  # to sigma = 0 only the first order is defined
            phi, b_h, rho, r = order_conditions(lambdas, i, order, variant, corrector=False)
            predictor[i, order - 1, 0] = -phi + (b_h * (rho / r).sum() if order > 1 else 0.0)
            predictor[i, order - 1, 1:order] = -b_h * rho / r
        for order in range(1, min(i, max_order) + 1):  # correct the step from i - 1 to i
            phi, b_h, rho, r = order_conditions(lambdas, i - 1, order, variant, corrector=True)
            corrector[i, order - 1, 0] = -b_h * rho[-1]
            corrector[i, order - 1, 1] = -phi + b_h * ((rho[:-1] / r).sum() + rho[-1])
            corrector[i, order - 1, 2:order + 1] = -b_h * rho[:-1] / r
    return torch.from_numpy(predictor).to(torch.float32), torch.from_numpy(corrector).to(torch.float32)


def order_conditions(lambdas: np.ndarray, i: int, order: int, variant: str, corrector: bool):
    """For the order-``order`` update of the step from ``lambdas[i]`` to ``lambdas[i + 1]``:
    ``h phi_1 = expm1(-h)``, ``B(h)``, the weights ``rho`` and the positions ``r_k`` of the earlier
    x0 (``k = 1 .. order - 1``). The predictor solves the first ``order - 1`` conditions; the
    corrector, whose last point is the new x0 (``r = 1``), all ``order``."""
    h = lambdas[i + 1] - lambdas[i]
    r = np.array([(lambdas[i - k] - lambdas[i]) / h for k in range(1, order)])  # (order - 1,)
    hh = -h
    h_phi_1 = np.expm1(hh)
    b_h = hh if variant == "bh1" else np.expm1(hh)
    ratios = np.append(r, 1.0)  # (order,)
    conditions, targets = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for k in range(1, order + 1):
        conditions.append(ratios ** (k - 1))
        targets.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    conditions, targets = np.array(conditions), np.array(targets)  # (order, order), (order,)
    if corrector:
        rho = np.array([0.5]) if order == 1 else np.linalg.solve(conditions, targets)
    elif order == 1:
        rho = np.zeros(0)
    else:
        rho = np.array([0.5]) if order == 2 else np.linalg.solve(conditions[:-1, :-1], targets[:-1])
    return h_phi_1, b_h, rho, r
