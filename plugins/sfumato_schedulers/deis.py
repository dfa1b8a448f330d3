"""DEIS, diffusion exponential integrator sampler (Zhang & Chen 2023,
https://arxiv.org/abs/2204.13902), in its log-rho multistep form: diffusers'
``DEISMultistepScheduler`` (``algorithm_type = "deis"``, ``solver_type = "logrho"``); ComfyUI's
``deis``.

On the variance-exploding level ``rho`` (the native sigma) the probability-flow ODE is
``dx/drho = d`` (eps for VP models, ``Formulation.derivative`` in general). DEIS fits a polynomial
in ``log rho`` through the derivatives of the last ``k`` steps and integrates it exactly over
``rho`` from this level to the next:

    x_next = x + sum_j c_ij d_{i-j},   c_ij = integral of the j-th Lagrange basis polynomial in log rho

(the closed forms are diffusers' ``ind_fn``). Orders warm up from 1 and follow DPM-Solver's rule
for the end (``multistep.dpm_solver_order``): the last step, to sigma = 0, is first order, an
Euler step that returns the model's x0. diffusers' DEIS instead stops at the model's smallest
training level (sigma_min), where the sample keeps that much noise, so the two agree up to the
last step.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .multistep import MultistepSolver, dpm_solver_order, history, remember
from .spacing import SigmaStepOptions


class DEIS(MultistepSolver):
    """Multistep exponential integrator of order 1-3, deterministic, one model call per step."""

    class Spec(SigmaStepOptions):
        type: Literal["deis"] = "deis"
        order: int = Field(2, ge=1, le=3, description="Largest order (diffusers' solver_order): how many past "
                           "derivatives a step combines.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.order = spec.order

    def step_tables(self, sigmas, schedule):
        """Adds ``deis_weights`` ``[N, order, order]``: the coefficients ``c_ij`` of step ``i`` for
        each order."""
        return {**super().step_tables(sigmas, schedule), "deis_weights": deis_weights(sigmas, self.order)}

    def step(self, model, x, plan, i, carry=None, noise=None):
        tables = self.tables(plan, "deis_weights")
        prediction = self.predict(model, x, plan, i)
        order = dpm_solver_order(i, len(plan), self.order)
        derivatives = [self.derivative(plan, prediction), *history(carry, "derivative", min(i, self.order - 1))]
        weights = tables["deis_weights"][i, order - 1]  # (max order,)
        for j in range(order):
            x = torch.addcmul(x, weights[j], derivatives[j])
        return sfumato.StepResult(x, prediction.x0, remember(derivatives, "derivative", self.order - 1))


def deis_weights(sigmas: torch.Tensor, max_order: int) -> torch.Tensor:
    """``[N, max_order, max_order]`` float32: entry ``[i, k - 1, j]`` is the weight of the derivative
    of step ``i - j`` in the order-``k`` step from ``sigmas[i]`` to ``sigmas[i + 1]`` (first order
    only for the step to 0). Computed in float64 with diffusers' closed forms."""
    rho = sigmas.double().numpy()  # (N + 1,)
    steps = len(rho) - 1
    weights = np.zeros((steps, max_order, max_order))

    def second(t, b, c):  # an antiderivative in rho of the linear basis in log rho that is 1 at b and 0 at c
        return t * (-np.log(c) + np.log(t) - 1) / (np.log(b) - np.log(c))

    def third(t, b, c, d):  # ... of the quadratic basis that is 1 at b and 0 at c and d
        lt, lc, ld = np.log(t), np.log(c), np.log(d)
        return t * (lc * (ld - lt + 1) - ld * lt + ld + lt**2 - 2 * lt + 2) / ((np.log(b) - lc) * (np.log(b) - ld))

    for i in range(steps):
        t, s0 = rho[i + 1], rho[i]
        weights[i, 0, 0] = t - s0
        if t == 0:  # to sigma = 0: first order only
            continue
        if i >= 1 and max_order >= 2:
            s1 = rho[i - 1]
            weights[i, 1, :2] = second(t, s0, s1) - second(s0, s0, s1), second(t, s1, s0) - second(s0, s1, s0)
        if i >= 2 and max_order >= 3:
            s1, s2 = rho[i - 1], rho[i - 2]
            weights[i, 2] = (third(t, s0, s1, s2) - third(s0, s0, s1, s2), third(t, s1, s2, s0) - third(s0, s1, s2, s0),
                             third(t, s2, s0, s1) - third(s0, s2, s0, s1))
    return torch.from_numpy(weights).to(torch.float32)
