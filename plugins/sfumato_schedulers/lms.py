"""Linear multistep (LMS): the Adams-Bashforth method in sigma on the probability-flow ODE
(k-diffusion's ``sample_lms``; diffusers' ``LMSDiscreteScheduler``; the WebUI's "LMS").

Step ``i`` integrates the Lagrange polynomial through the last ``k`` derivatives
``d_j = (x_j - x0_j) / sigma_j`` over ``[sigma_i, sigma_{i+1}]``:

    x_next = x + sum_j c_ij d_{i-j},   c_ij = integral from sigma_i to sigma_{i+1} of
             prod_{m != j} (s - sigma_{i-m}) / (sigma_{i-j} - sigma_{i-m}) ds

with ``k = min(i + 1, order)``. The coefficients are computed exactly (Gauss-Legendre quadrature
of a polynomial) once per plan; the references integrate them numerically with SciPy's ``quad``,
which agrees to float32 rounding.

The last step, to sigma = 0, returns the model's x0 (``lower_order_final``, as DPM-Solver does):
the references instead extrapolate the derivatives' polynomial from the last few levels down to
0. As the steps grow those levels crowd together while the last interval ``[sigma_min, 0]`` stays
as wide, so the extrapolation does not converge (on Gaussian data with a VP model its error stops
shrinking at 1.6e-2 from 32 steps on, for every order above 1). ``lower_order_final = false``
reproduces the references exactly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .multistep import history, remember
from .sigma_space import SigmaSpaceScheduler
from .spacing import SigmaStepOptions


class LMS(SigmaSpaceScheduler):
    """Linear multistep of order up to 4 (warming up from 1), deterministic, one model call per step."""

    class Spec(SigmaStepOptions):
        type: Literal["lms"] = "lms"
        order: int = Field(4, ge=1, le=4, description="Largest order: how many past derivatives a step combines.")
        lower_order_final: bool = Field(
            True, description="The last step, to sigma = 0, returns the model's x0 (first order); false "
            "extrapolates the derivatives to 0 as k-diffusion and diffusers do, which stops converging "
            "as the steps grow.",
        )

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.order = spec.order

    def step_tables(self, sigmas, schedule):
        """Adds ``lms_weights`` ``[N, order, order]``: the coefficients ``c_ij`` of step ``i`` for
        each order (zeros where step ``i`` has too few earlier levels)."""
        return {**super().step_tables(sigmas, schedule), "lms_weights": lms_weights(sigmas, self.order)}

    def step(self, model, x, plan, i, carry=None, noise=None):
        prediction = self.predict(model, x, plan, i)
        if self.spec.lower_order_final and i == len(plan) - 1:  # to sigma = 0
            return sfumato.StepResult(prediction.x0, prediction.x0, {})
        order = min(i + 1, self.order)
        derivatives = [self.derivative(plan, prediction), *history(carry, "derivative", order - 1)]
        weights = self.tables(plan, "lms_weights")["lms_weights"][i, order - 1]  # (max order,)
        for j, derivative in enumerate(derivatives):
            x = torch.addcmul(x, weights[j], derivative)
        return sfumato.StepResult(x, prediction.x0, remember(derivatives, "derivative", self.order - 1))


def lms_weights(sigmas: torch.Tensor, max_order: int) -> torch.Tensor:
    """``[N, max_order, max_order]`` float32: entry ``[i, k - 1, j]`` is the weight of the
    derivative of step ``i - j`` in an order-``k`` step ``i`` from ``sigmas[i]`` to ``sigmas[i + 1]``.

    The integrand is a polynomial of degree ``k - 1``, so ``max_order``-point Gauss-Legendre
    quadrature is exact; computed in float64 on the plan's float32 levels.
    """
    levels = sigmas.double().numpy()  # (N + 1,)
    nodes, node_weights = np.polynomial.legendre.leggauss(max_order)
    steps = len(levels) - 1
    weights = np.zeros((steps, max_order, max_order))
    for i in range(steps):
        start, end = levels[i], levels[i + 1]
        s = (end - start) / 2 * nodes + (end + start) / 2  # quadrature points in [sigma_{i+1}, sigma_i]
        for order in range(1, min(i + 1, max_order) + 1):
            for j in range(order):
                basis = np.ones_like(s)
                for m in range(order):
                    if m != j:
                        basis *= (s - levels[i - m]) / (levels[i - j] - levels[i - m])
                weights[i, order - 1, j] = (end - start) / 2 * (node_weights * basis).sum()
    return torch.from_numpy(weights).to(torch.float32)
