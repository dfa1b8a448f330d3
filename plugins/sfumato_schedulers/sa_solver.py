"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion
Models", https://arxiv.org/abs/2309.05019; diffusers' ``SASolverScheduler``; ComfyUI's
``sa_solver``): a stochastic Adams predictor-corrector in data prediction, one model call per step.

With the half log-SNR ``lambda = log(alpha / sigma)`` (``-log sigma`` for VP and EDM),
``h = lambda_next - lambda`` and the stochasticity ``tau`` of the step, each step evaluates the
model at the predicted sample, corrects the previous step with it (Adams-Moulton, from the
previous state and the same noise) and predicts the next one (Adams-Bashforth):

    x_next = (sigma_next / sigma) e^(-tau^2 h) x + sum_j b_j D_j + sigma_next sqrt(1 - e^(-2 tau^2 h)) noise
    b_j    = alpha_next int_lambda^lambda_next (1 + tau^2) e^((1 + tau^2)(u - lambda_next)) l_j(u) du

``D_j`` are past x0 predictions and ``l_j`` their Lagrange basis over their lambdas (the
predictor's end at this step, the corrector's at the new point); order 2 uses the paper's
simplified coefficients (Appendix D), as diffusers does. Orders warm up, and as ComfyUI does
the ones near the end come down (``min(order, N - 1 - i)`` for the predictor, ``N - i`` for the
corrector) and the last step, to sigma = 0, returns its x0 uncorrected. ``tau`` applies where the
step's timestep is between ``tau_start`` and ``tau_end`` (fractions of the training timesteps;
diffusers' 200 to 800 of 1000); elsewhere the step is its ODE. From flow matching's pure noise
(``lambda = -inf``) the first level is never a Lagrange node.

diffusers differs at the end: its last level is the model's lowest (not 0) and its final sample
is not denoised; its last orders come down later.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

import sfumato

from .multistep import MultistepSolver, history, remember
from .sigma_space import variance_exploding_levels
from .spacing import SigmaStepOptions


class SASolver(MultistepSolver):
    """Stochastic Adams predictor-corrector; stochastic at ``tau > 0``, one model call per step."""

    class Spec(SigmaStepOptions):
        type: Literal["sa-solver"] = "sa-solver"
        predictor_order: int = Field(3, ge=1, le=4, description="Order of the Adams-Bashforth predictor.")
        corrector_order: int = Field(4, ge=1, le=4, description="Order of the Adams-Moulton corrector.")
        tau: float = Field(1.0, ge=0, description="Stochasticity from tau_start to tau_end: 0 is the ODE solver.")
        tau_start: float = Field(
            0.2, ge=0, le=1, description="The lowest timestep, as a fraction of the training timesteps, where tau "
            "applies (ComfyUI's and diffusers' 0.2).")
        tau_end: float = Field(0.8, ge=0, le=1, description="The highest such timestep (0.8).")

        @model_validator(mode="after")
        def _interval(self):
            if not self.tau_start <= self.tau_end:
                raise ValueError(f"tau_start ({self.tau_start}) must not be above tau_end ({self.tau_end})")
            return self

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.tau > 0
        self.order = min(spec.predictor_order + 1, spec.corrector_order)  # a corrected predictor
        self.kept = max(spec.predictor_order, spec.corrector_order) - 1  # past x0 the steps need

    def orders(self, i: int, steps: int) -> tuple[int, int]:
        """``(predictor, corrector)`` orders of step ``i`` of ``steps``: warm-up, ComfyUI's lower
        orders at the end, no corrector at the first and last steps, no predictor at the last."""
        predictor = min(self.spec.predictor_order, i + 1, steps - 1 - i)
        corrector = 0 if i in (0, steps - 1) else min(self.spec.corrector_order, i + 1, steps - i)
        return predictor, corrector

    def step_tables(self, sigmas, schedule):
        """Adds, per step ``i``: the predictor's weights of ``x`` (``sa_x``) and of its noise
        (``sa_noise``), and ``sa_predictor`` ``[N, P, P]`` / ``sa_corrector`` ``[N, C, C]``: the weights
        of this and the past steps' x0 in each order's predictor from level ``i`` to ``i + 1``
        and corrector from ``i - 1`` to ``i`` (the corrector's weight of ``x`` is ``sa_x[i - 1]``).
        Computed in float64."""
        spec = self.spec
        sigmas64 = sigmas.double()
        with np.errstate(divide="ignore"):
            lambdas = -np.log(variance_exploding_levels(schedule, sigmas64).numpy())  # (N + 1,)
        alphas, sigma = schedule.alpha(sigmas64).numpy(), sigmas64.numpy()
        t = schedule.timestep_at(sigmas[:-1]).double().numpy() / schedule.num_timesteps  # (N,) as fractions
        taus = np.where((spec.tau_start <= t) & (t <= spec.tau_end), spec.tau, 0.0)
        steps = len(sigma) - 1
        x_weight, noise_weight = np.zeros(steps), np.zeros(steps)
        predictor = np.zeros((steps, spec.predictor_order, spec.predictor_order))
        corrector = np.zeros((steps, spec.corrector_order, spec.corrector_order))
        for i in range(steps):
            if sigma[i + 1] == 0:  # the last step returns x0
                continue
            ratio = math.exp(lambdas[i] - lambdas[i + 1])  # sigma_next alpha / (sigma alpha_next): 0 where alpha = 0
            x_weight[i] = sigma[i + 1] / sigma[i] * ratio ** (taus[i] ** 2) if taus[i] else sigma[i + 1] / sigma[i]
            noise_weight[i] = sigma[i + 1] * math.sqrt(1 - ratio ** (2 * taus[i] ** 2))
            for order in range(1, min(spec.predictor_order, i + 1) + 1):
                nodes = list(range(i, i - order, -1))
                predictor[i, order - 1, :order] = adams_weights(lambdas, nodes, i, alphas[i + 1], taus[i], False)
            for order in range(1, min(spec.corrector_order, i + 1) + 1) if i >= 1 else ():
                nodes = list(range(i, i - order, -1))
                corrector[i, order - 1, :order] = adams_weights(lambdas, nodes, i - 1, alphas[i], taus[i - 1], True)
        tables = {"sa_x": x_weight, "sa_noise": noise_weight, "sa_predictor": predictor, "sa_corrector": corrector}
        return {**super().step_tables(sigmas, schedule),
                **{name: torch.from_numpy(values).to(torch.float32) for name, values in tables.items()}}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError("sa-solver is stochastic: step() needs `noise` shaped like x")
        tables = self.tables(plan, "sa_predictor")
        x0 = self.predict(model, x, plan, i).x0
        outputs = [x0, *history(carry, "x0_", min(i, self.kept))]
        predictor, corrector = self.orders(i, len(plan))
        if corrector:  # Adams-Moulton: redo the last step with this step's x0
            weights = tables["sa_corrector"][i, corrector - 1]
            x = tables["sa_x"][i - 1] * carry["x"]
            for j in range(corrector):
                x = torch.addcmul(x, weights[j], outputs[j])
            if self.stochastic:
                x = x + carry["noise"]
        if not predictor:  # the last step
            return sfumato.StepResult(x0, x0, {})
        weights = tables["sa_predictor"][i, predictor - 1]
        x_next = tables["sa_x"][i] * x
        for j in range(predictor):
            x_next = torch.addcmul(x_next, weights[j], outputs[j])
        state = {"x": x, **remember(outputs, "x0_", self.kept)}
        if self.stochastic:
            state["noise"] = tables["sa_noise"][i] * noise
            x_next = x_next + state["noise"]
        return sfumato.StepResult(x_next, x0, state)


def adams_weights(lambdas: np.ndarray, nodes: list[int], start: int, alpha_end: float, tau: float,
                  corrector: bool) -> np.ndarray:
    """The weights ``b_j`` of the x0 at levels ``nodes`` (newest first) in an SA-Solver step from
    level ``start`` to ``start + 1``, ``alpha_end`` the signal scale there (module docstring;
    float64). A level whose lambda is not finite (flow matching's pure noise) is no node: its
    weight is 0 and the order comes down."""
    finite = [k for k in nodes if np.isfinite(lambdas[k])] or nodes[:1]  # order 1 needs no node's place
    weights = np.zeros(len(nodes))
    points = lambdas[finite]  # (k,) newest first
    order = len(points)
    end, h = lambdas[start + 1], lambdas[start + 1] - lambdas[start]
    tau_mul = 1 + tau**2
    total = alpha_end * -math.expm1(-tau_mul * h)  # the order-1 weight
    if order == 1:
        found = [total]
    elif order == 2:  # the paper's simplified order 2 (Appendix D), diffusers' choice
        if corrector:
            newest = alpha_end * 0.5 * tau_mul * h
            found = [newest, total - newest]
        else:
            older = alpha_end * 0.5 * tau_mul * h**2 / (points[1] - points[0])
            found = [total - older, older]
    else:  # Lagrange: int_{-h}^0 e^(tau_mul u) u^q du (u = lambda - lambda_end) against each basis polynomial
        integrals = [-math.expm1(-tau_mul * h) / tau_mul]
        for q in range(1, order):
            integrals.append(-((-h) ** q) * math.exp(-tau_mul * h) / tau_mul - q / tau_mul * integrals[-1])
        basis = np.linalg.inv(np.vander(points - end, order, increasing=True))  # column j: l_j in powers of u
        found = alpha_end * tau_mul * np.asarray(integrals) @ basis
    weights[:order] = found
    return weights
