"""DPM-Solver++ SDE: a two-stage stochastic DPM-Solver++ step with Brownian-tree noise
(k-diffusion's ``sample_dpmpp_sde``; diffusers' ``DPMSolverSDEScheduler``; the WebUI's
"DPM++ SDE"; ComfyUI's ``dpmpp_sde``). Lu et al. 2022, https://arxiv.org/abs/2211.01095.

On the variance-exploding sample ``x / alpha = x0 + s eps`` (``s = sigma / alpha``, the level of
k-diffusion's variable; ``lambda = -log s`` is the half log-SNR), each stage is an ancestral
DPM-Solver++(1) step (``ancestral_levels``) to a level ``u``, ending at ``alpha(u) (x/alpha)``:

    s_mid = s^(1 - r) s_next^r                                              (r = 1/2: halfway in lambda)
    x_mid  = stage(x -> s_mid,  denoised = x0(x, sigma),                noise = W-increment sigma -> mid)
    x_next = stage(x -> s_next, denoised = (1 - 1/2r) x0 + 1/2r x0(x_mid), noise = W-increment sigma -> next)
    stage(x -> u): s_down, s_up = ancestral_levels(s, u, eta)
                   alpha(u) ((s_down / s) (x / alpha) - expm1(log(s_down / s)) denoised + s_up noise)

For VP and EDM (``alpha = 1``) this is k-diffusion's and diffusers' arithmetic; for flow matching
it is ComfyUI's half-log-SNR form. The noise of both stages comes from one Brownian path over the
plan's native sigmas (``noise_levels``: the increments sigma -> mid and mid -> next; the second
stage's increment is their sum), so runs with more steps refine the same path. The last step,
to sigma = 0, is an Euler step with one model call. From flow matching's pure noise
(``alpha = 0``, ``s = inf``) the midpoint is taken from ``sigma (1 - 1e-4)``, as ComfyUI offsets
the first sigma, while the stage coefficients keep their exact limits.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

from .sigma_space import SigmaSpaceScheduler, ancestral_levels, level_tables, predict_at, variance_exploding_levels
from .spacing import SigmaStepOptions


class DPMSolverPlusPlusSDE(SigmaSpaceScheduler):
    """Second-order two-stage SDE solver; stochastic (at ``eta > 0``), two model calls per step
    (one on the last), two Brownian draws per step."""

    model_calls_per_step = 2
    noise_draws = 2
    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-sde"] = "dpmpp-sde"
        eta: float = Field(
            1.0, ge=0, description="Weight of the fresh noise: 1 is the SDE solver, 0 is its ODE (DPM-Solver++(2S)).")
        r: float = Field(
            0.5, gt=0, lt=1, description="Where the midpoint lies between the step's levels, as a fraction of the "
            "half log-SNR step.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.eta > 0

    def step_tables(self, sigmas, schedule):
        """Adds, per step (``[N]``): each stage's coefficients on ``x``, on its denoised value and
        on its noise (the second stage's split over the two Brownian draws), the model's timestep
        and input scale at ``sigma_mid``, and ``dsigma`` for the last step's Euler step."""
        r, eta = self.spec.r, self.spec.eta
        sigmas64 = sigmas.double()
        sigma, sigma_next = sigmas64[:-1], sigmas64[1:]
        s = variance_exploding_levels(schedule, sigmas64)
        s, s_next = s[:-1], s[1:]
        finite_s = torch.where(torch.isinf(s), variance_exploding_levels(schedule, sigma * (1 - 1e-4)), s)
        s_mid = finite_s ** (1 - r) * s_next**r  # (N,)
        mid = s_mid / (1 + schedule.signal_slope * s_mid)  # its native level

        def stage(u: torch.Tensor, alpha_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            s_down, s_up = ancestral_levels(s, u, eta)
            return alpha_u * s_down / sigma, -alpha_u * (s_down.log() - s.log()).expm1(), alpha_u * s_up

        mid_x, mid_x0, mid_noise = stage(s_mid, schedule.alpha(mid))
        next_x, next_x0, next_noise = stage(s_next, schedule.alpha(sigma_next))
        span = (sigma - sigma_next).clamp(min=1e-30)  # the second stage's increment: draws 0 and 1 summed
        tables = {"mid_x": mid_x, "mid_x0": mid_x0, "mid_noise": mid_noise, "next_x": next_x, "next_x0": next_x0,
                  "next_noise0": next_noise * ((sigma - mid) / span).sqrt(),
                  "next_noise1": next_noise * ((mid - sigma_next) / span).sqrt(), "mid_sigma": mid}
        tables = {name: values.to(sigmas.dtype) for name, values in tables.items()}
        return {**super().step_tables(sigmas, schedule), **tables, **level_tables(schedule, tables["mid_sigma"], "mid")}

    def noise_levels(self, plan):
        """``[N, 3]``: each step's ``sigma``, ``sigma_mid`` and ``sigma_next`` (the last step, which
        adds no noise, spans nothing), so both draws are increments of one Brownian path."""
        levels = torch.stack([plan.sigmas[:-1], self.tables(plan, "mid_sigma")["mid_sigma"], plan.sigmas[1:]], dim=1)
        levels[-1] = plan.sigmas[-2]
        return levels

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError("dpmpp-sde is stochastic: step() needs `noise` shaped [2, *x.shape]")
        tables = self.tables(plan, "mid_sigma")
        prediction = self.predict(model, x, plan, i)
        if i == len(plan) - 1:  # to sigma = 0: Euler, no noise
            return sfumato.StepResult(torch.addcmul(x, self.derivative(plan, prediction), self.dsigma(plan, i)),
                                      prediction.x0, {})
        x_mid = tables["mid_x"][i] * x + tables["mid_x0"][i] * prediction.x0
        if self.stochastic:
            x_mid = torch.addcmul(x_mid, tables["mid_noise"][i], noise[0])
        trial = predict_at(model, x_mid, tables, "mid", i)
        fac = 1 / (2 * self.spec.r)
        denoised = trial.x0 if fac == 1 else torch.lerp(prediction.x0, trial.x0, fac)
        x = tables["next_x"][i] * x + tables["next_x0"][i] * denoised
        if self.stochastic:
            x = x + tables["next_noise0"][i] * noise[0] + tables["next_noise1"][i] * noise[1]
        return sfumato.StepResult(x, prediction.x0, {})
