"""ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time
SDE for diffusion models", https://arxiv.org/abs/2309.06169; ComfyUI's ``er_sde``), a
multistep solver of the extended reverse-time SDE in data prediction with up to three stages.

On the variance-exploding level ``l = sigma / alpha`` (k-diffusion's sigma; ``alpha = 1`` for VP
and EDM), with a noise scale function ``phi`` (``noise_scaler``), ``r = phi(l_next) / phi(l)``
and ``D``, ``D_1``, ``D_2`` the x0 of this step and the two before, at levels ``l``, ``l_1``,
``l_2``:

    x_next = alpha_next ((x / alpha) r + (1 - r) D
                         + (dl + S_1 phi(l_next)) D'  + (dl^2 / 2 + S_2 phi(l_next)) D''
                         + sqrt(l_next^2 - (l r)^2) noise)
    dl = l_next - l,   D' = (D - D_1) / (l - l_1),   D'' = 2 (D' - D'_1) / (l - l_2)
    S_1 = int 1 / phi,   S_2 = int (u - l) / phi(u) du     over [l_next, l], as ComfyUI: a 200-point Riemann sum

Stages warm up (``min(i + 1, max_stage)``); the last step, to sigma = 0, returns ``D``.
``noise_scaler``: ``er-sde`` is the paper's ``phi(l) = l (e^(l^0.3) + 10)``; ``reverse-time-sde``
is ``phi(l) = l^(eta + 1)`` (``eta = 1``: the reverse-time SDE; ``eta = 0``: the ODE, no noise).
The update is linear in ``x, D, D_1, D_2``, so the plan holds its weights. From flow matching's
pure noise (``alpha = 0``, ``l = inf``) the first step takes its exact limit
``x_next = alpha_next D + sigma_next noise`` where ComfyUI offsets the first sigma.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

from .multistep import history, remember
from .sigma_space import SigmaSpaceScheduler, variance_exploding_levels
from .spacing import SigmaStepOptions

#: Points of the Riemann sums that approximate the stage integrals (ComfyUI's).
INTEGRATION_POINTS = 200


class ERSDE(SigmaSpaceScheduler):
    """Up to third-order multistep stochastic solver; stochastic (but for its ODE), one model
    call per step."""

    order = 3

    class Spec(SigmaStepOptions):
        type: Literal["er-sde"] = "er-sde"
        noise_scaler: Literal["er-sde", "reverse-time-sde"] = Field(
            "er-sde", description="The noise scale function phi: er-sde, the paper's l (e^(l^0.3) + 10), or "
            "reverse-time-sde, l^(eta + 1) (ComfyUI's solver_type).")
        eta: float = Field(1.0, ge=0, description="For reverse-time-sde: 1 is the reverse-time SDE, 0 its ODE.")
        max_stage: int = Field(3, ge=1, le=3, description="The highest stage (order) a step uses.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.noise_scaler == "er-sde" or spec.eta > 0
        self.order = spec.max_stage

    def scale_ratio(self, levels: np.ndarray) -> np.ndarray:
        """``phi(l) / l`` (float64), which stays finite where ``phi`` would overflow at ``l = inf``."""
        if self.spec.noise_scaler == "er-sde":
            return np.exp(levels**0.3) + 10.0
        return levels**self.spec.eta

    def step_tables(self, sigmas, schedule):
        """Adds ``er_x`` and ``er_noise`` ``[N]`` (the weights of ``x`` and of the noise) and
        ``er_weights`` ``[N, 3, 3]`` (of this and the two past steps' x0 in each stage's update;
        stages a step cannot take are 0). Computed in float64."""
        sigmas64 = sigmas.double()
        levels = variance_exploding_levels(schedule, sigmas64).numpy()  # (N + 1,) l; inf where alpha = 0
        alpha, sigma = schedule.alpha(sigmas64).numpy(), sigmas64.numpy()
        steps = len(levels) - 1
        weights, x_weight, noise_weight = np.zeros((steps, 3, 3)), np.zeros(steps), np.zeros(steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.scale_ratio(levels)  # (N + 1,) phi(l) / l
            for i in range(steps):
                l, l_next, a_next = levels[i], levels[i + 1], alpha[i + 1]
                if l_next == 0:  # to sigma = 0: x_next = D
                    weights[i, :, 0] = 1.0
                    continue
                l_r = l_next * ratio[i + 1] / ratio[i]  # l r, finite where l = inf
                r = l_r / l
                x_weight[i] = a_next * l_next * ratio[i + 1] / (sigma[i] * ratio[i])  # (alpha_next / alpha) r
                noise_weight[i] = a_next * np.sqrt(max(l_next**2 - l_r**2, 0.0))
                weights[i, :, 0] = a_next * (1 - r)
                if i < 1 or not np.isfinite(levels[i - 1]):
                    continue
                dl = l_next - l
                points = l_next + np.arange(INTEGRATION_POINTS) * (-dl / INTEGRATION_POINTS)  # [l_next, l)
                phi_next, phi_points = l_next * ratio[i + 1], points * self.scale_ratio(points)
                stage2 = a_next * (dl + np.sum(1 / phi_points) * (-dl / INTEGRATION_POINTS) * phi_next)
                d1 = np.array([1.0, -1.0, 0.0]) / (l - levels[i - 1])  # D' as weights of D, D_1, D_2
                weights[i, 1:] = weights[i, 0] + stage2 * d1
                if i < 2 or not np.isfinite(levels[i - 2]):
                    continue
                integral = np.sum((points - l) / phi_points) * (-dl / INTEGRATION_POINTS)
                stage3 = a_next * (dl**2 / 2 + integral * phi_next)
                d1_before = np.array([0.0, 1.0, -1.0]) / (levels[i - 1] - levels[i - 2])
                weights[i, 2] += stage3 * (d1 - d1_before) / ((l - levels[i - 2]) / 2)
        return {**super().step_tables(sigmas, schedule),
                **{name: torch.from_numpy(values).to(torch.float32)
                   for name, values in (("er_x", x_weight), ("er_weights", weights), ("er_noise", noise_weight))}}

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError("er-sde is stochastic: step() needs `noise` shaped like x")
        tables = self.tables(plan, "er_weights")
        x0 = self.predict(model, x, plan, i).x0
        stage = 1 if i == len(plan) - 1 else min(i + 1, self.spec.max_stage)
        outputs = [x0, *history(carry, "x0_", min(i, self.spec.max_stage - 1))]
        weights = tables["er_weights"][i, stage - 1]  # (3,)
        x = tables["er_x"][i] * x
        for j in range(stage):
            x = torch.addcmul(x, weights[j], outputs[j])
        if self.stochastic:
            x = torch.addcmul(x, tables["er_noise"][i], noise)
        return sfumato.StepResult(x, x0, remember(outputs, "x0_", self.spec.max_stage - 1))
