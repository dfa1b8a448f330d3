"""Stochastic churn (Karras et al. 2022, https://arxiv.org/abs/2206.00364, Algorithm 2): before
each step, fresh noise raises the level from ``sigma`` to ``sigma_hat = (1 + gamma) sigma``, and the
step then starts from there; ``euler``, ``heun`` and ``dpm2`` take it as k-diffusion's
``sample_euler``, ``sample_heun`` and ``sample_dpm_2`` do:

    gamma = min(s_churn / N, sqrt(2) - 1)   where s_tmin <= sigma <= s_tmax, else 0
    x_hat = x + sqrt(sigma_hat^2 - sigma^2) * s_noise * noise

With ``s_churn = 0`` (the default) nothing changes and the sampler stays deterministic.

For a formulation with signal scale ``alpha(sigma) = 1 - c sigma`` (flow matching) the noise is
added on the variance-exploding level ``s = sigma / alpha``, which keeps the marginal
``alpha x0 + sigma eps``: ``s_hat = (1 + gamma) s``, ``sigma_hat`` its native level and
``x_hat = alpha_hat / alpha * x + alpha_hat sqrt(s_hat^2 - s^2) * s_noise * noise`` (exactly the
above where ``alpha = 1``); no churn where ``s`` is infinite (flow matching's pure noise).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field
from torch import Tensor

import sfumato

from .sigma_space import SigmaSpaceScheduler, level_tables, predict_at, variance_exploding_levels


class ChurnOptions(BaseModel):
    """Spec fields of the samplers that can churn (mixed into their ``Spec``)."""

    s_churn: float = Field(0.0, ge=0, description="Karras et al.'s S_churn: the total noise added over the "
                           "run (gamma = min(s_churn / steps, sqrt(2) - 1) per step); 0 is deterministic.")
    s_tmin: float = Field(0.0, ge=0, description="Churn only at noise levels sigma >= s_tmin.")
    s_tmax: float | None = Field(None, gt=0, description="Churn only at noise levels sigma <= s_tmax (none: no bound).")
    s_noise: float = Field(1.0, ge=0, description="Scale of the churn noise (Karras et al.'s S_noise; slightly "
                           "above 1 can offset detail lost to the denoiser).")


def churn_tables(schedule: sfumato.Formulation, sigmas: Tensor, options: ChurnOptions) -> dict[str, Tensor]:
    """Per step (``[N]``, from the plan's levels ``[N + 1]``): ``sigma_hat``, the model's timestep
    and input scale there (``hat_timestep``, ``hat_input_scale``), ``hat_step = sigma_next -
    sigma_hat``, the noise scale ``churn_scale`` and, where the signal scale is not 1, the
    ``churn_ratio`` ``alpha_hat / alpha``."""
    sigma = sigmas[:-1]
    steps = len(sigma)
    upper = math.inf if options.s_tmax is None else options.s_tmax
    s = variance_exploding_levels(schedule, sigma)
    in_range = (sigma >= options.s_tmin) & (sigma <= upper) & torch.isfinite(s)
    gamma = torch.where(in_range, torch.tensor(min(options.s_churn / steps, 2**0.5 - 1)), torch.tensor(0.0))
    s_hat = torch.where(in_range, s * (1 + gamma), s)
    c = schedule.signal_slope
    sigma_hat = s_hat / (1 + c * s_hat) if c else s_hat  # the native level of s_hat
    sigma_hat = torch.where(in_range, sigma_hat, sigma)
    alpha_hat = schedule.alpha(sigma_hat)
    tables = {"sigma_hat": sigma_hat, **level_tables(schedule, sigma_hat, "hat"), "hat_step": sigmas[1:] - sigma_hat,
              "churn_scale": torch.where(in_range, alpha_hat * (s_hat**2 - s**2).sqrt(), 0.0) * options.s_noise}
    if c:
        tables["churn_ratio"] = torch.where(in_range, alpha_hat / schedule.alpha(sigma), 1.0)  # 0 / 0 where s = inf
    return tables


class ChurningScheduler(SigmaSpaceScheduler):
    """A sigma-space sampler that can churn: stochastic when its spec's ``s_churn`` is above 0
    (its ``Spec`` mixes in ``ChurnOptions``); a step begins with ``start``."""

    def __init__(self, spec: ChurnOptions):
        super().__init__(spec)
        self.stochastic = spec.s_churn > 0

    def step_tables(self, sigmas, schedule):
        """Adds ``churn_tables`` when the sampler churns."""
        tables = super().step_tables(sigmas, schedule)
        return {**tables, **churn_tables(schedule, sigmas, self.spec)} if self.stochastic else tables

    def start(self, model: sfumato.Model, x: Tensor, plan: sfumato.SamplingPlan, i: int,
              noise: Tensor | None) -> tuple[Tensor, sfumato.Prediction, Tensor]:
        """Where step ``i`` starts: ``x`` raised to ``sigma_hat`` with ``noise`` (shaped like ``x``),
        the model's prediction there and the step's length in sigma from there to the next level.
        Without churn: ``x``, the prediction at the plan's level and ``sigma_next - sigma``."""
        if not self.stochastic:
            return x, self.predict(model, x, plan, i), self.dsigma(plan, i)
        if noise is None:
            raise sfumato.SamplingError(f"{self.type_name()} with s_churn > 0 is stochastic: step() needs `noise` "
                                        "shaped like x")
        tables = self.tables(plan, "churn_scale")
        if "churn_ratio" in tables:
            x = x * tables["churn_ratio"][i]
        x = torch.addcmul(x, tables["churn_scale"][i], noise)
        return x, predict_at(model, x, tables, "hat", i), tables["hat_step"][i]
