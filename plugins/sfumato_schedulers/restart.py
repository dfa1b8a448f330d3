"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes",
https://arxiv.org/abs/2306.14878; the WebUI's "Restart"): Heun steps on the probability-flow
ODE, interrupted where the noise level reaches ``restart_min`` by restarts: forward noise back up
to ``restart_max`` and Heun steps down again, ``restart_times`` times. The forward noise
contracts the errors accumulated so far, which the ODE alone only carries along.

Every Heun step is a plan step, the restart segments included, so a step costs two model calls
(one on the last) whatever it does and ``steps`` counts them all: the base levels come from the
sigma schedule for ``steps - restart_steps * restart_times`` steps, and each restart adds
``restart_steps`` steps on Karras levels from ``restart_max`` down to ``restart_min`` (the base
levels closest to them). A restart segment's first step starts with the jump up,

    x <- (alpha_max / alpha_min) x + alpha_max sqrt(s_max^2 - s_min^2) noise      (s = sigma / alpha)

so the plan's levels rise at that step (``sigmas[i + 1] > sigmas[i]``, and ``timesteps[i]`` is the
restart level's: where the step's first model call is); ``alpha = 1`` for VP and EDM.
With ``restart_steps`` and ``restart_times`` unset the WebUI's rule applies: below 20 steps no
restart (plain Heun), from 20 one restart of 9 steps, from 36 two of ``steps // 4``. The WebUI
also replaces the base levels by Karras levels; here they are the spec's ``sigmas``
(``sigmas = "karras"`` for the WebUI's). The restart interval is given in the
variance-exploding level ``s = sigma / alpha``, which is sigma itself for VP and EDM models.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

import sfumato

from .sigma_space import SigmaSpaceScheduler, level_tables, predict_at, variance_exploding_levels
from .spacing import SigmaStepOptions, keep_strength


class Restart(SigmaSpaceScheduler):
    """Heun steps with restarts; stochastic, two model calls per step (one on the last)."""

    model_calls_per_step = 2
    order = 2

    class Spec(SigmaStepOptions):
        type: Literal["restart"] = "restart"
        restart_steps: int | None = Field(
            None, ge=1, description="Heun steps per restart, from restart_max down to restart_min (unset: the "
            "WebUI's rule, see docs/schedulers.md).")
        restart_times: int | None = Field(
            None, ge=0, description="How many times to restart (0: plain Heun; unset: the WebUI's rule, or 1 "
            "with restart_steps set).")
        restart_min: float = Field(0.1, gt=0, description="Restart where the noise level (sigma / alpha) reaches this.")
        restart_max: float = Field(
            2.0, gt=0, description="The noise level (sigma / alpha) each restart goes back up to.")

        @model_validator(mode="after")
        def _interval(self):
            if not self.restart_max > self.restart_min:
                raise ValueError(f"restart_max ({self.restart_max}) must be above restart_min ({self.restart_min})")
            return self

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.stochastic = spec.restart_times != 0

    def restarts(self, steps: int) -> tuple[int, int]:
        """``(restart_steps, restart_times)`` for a run of ``steps`` plan steps."""
        spec = self.spec
        if spec.restart_steps is None and spec.restart_times is None:  # the WebUI's rule
            return (steps // 4, 2) if steps >= 36 else (9, 1) if steps >= 20 else (0, 0)
        times = 1 if spec.restart_times is None else spec.restart_times
        return (spec.restart_steps or 9) if times else 0, times

    def plan(self, schedule, steps=None, strength=1.0):
        steps = steps or self.spec.steps
        restart_steps, times = self.restarts(steps)
        base_steps = steps - restart_steps * times
        if base_steps < 2 and times:
            raise sfumato.SpecError(
                f"[scheduler] restart_steps = {restart_steps} x restart_times = {times} leave {base_steps} of "
                f"{steps} steps to the base levels, which need 2 or more for a restart between them; "
                f"use more steps or fewer restart steps")
        base = super().plan(schedule, base_steps)
        levels = base.sigmas.double()  # (B + 1,)
        starts, ends = levels[:-1].tolist(), levels[1:].tolist()
        if times:
            s = variance_exploding_levels(schedule, levels[:-1])  # (B,), the positive levels
            low, high = int((s - self.spec.restart_min).abs().argmin()), int((s - self.spec.restart_max).abs().argmin())
            if not 0 < low or not high < low:
                raise sfumato.SpecError(
                    f"[scheduler] restart_min = {self.spec.restart_min} and restart_max = {self.spec.restart_max} "
                    f"fall on base levels {high} and {low} of {base_steps}, which leave no interval to restart in; "
                    "use more steps, another sigma schedule or a wider interval")
            ramp = sfumato.spacing.karras_sigmas(float(s[low]), float(s[high]), restart_steps + 1)
            ramp = torch.from_numpy(ramp) / (1 + schedule.signal_slope * torch.from_numpy(ramp))  # native levels
            ramp[0], ramp[-1] = levels[high], levels[low]  # exactly the base levels
            segment = list(zip(ramp[:-1].tolist(), ramp[1:].tolist()))
            for _ in range(times):  # after the base step that lands on level `low`
                starts[low:low], ends[low:low] = [a for a, _ in segment], [b for _, b in segment]
        sigmas = torch.tensor([starts[0], *ends], dtype=torch.float32)  # (N + 1,): x's level at each boundary
        starts = torch.tensor(starts, dtype=torch.float32)  # (N,)
        plan = sfumato.SamplingPlan(schedule.timestep_at(starts), sigmas, base.init_noise_sigma, schedule,
                                    extra=self.step_tables(sigmas, schedule, starts))
        return keep_strength(plan, strength)

    def step_tables(self, sigmas, schedule, starts=None):
        """Adds, per step (``[N]``): the model's timestep and input scale where the step's Heun
        step starts (``start``: the restart level on a segment's first step, else ``sigmas[i]``)
        and ends (``end``), ``heun_step = sigmas[i + 1] - start``, the jump's noise scale
        ``renoise_scale`` (0 off the jumps) and, where the signal scale is not 1, ``renoise``."""
        starts = sigmas[:-1] if starts is None else starts
        before = sigmas[:-1]
        jump = starts > before
        s_start, s_before = variance_exploding_levels(schedule, starts), variance_exploding_levels(schedule, before)
        alpha_start = schedule.alpha(starts)
        scale = torch.where(jump, alpha_start * (s_start**2 - s_before**2).clamp(min=0).sqrt(), 0.0)
        tables = {**super().step_tables(sigmas, schedule), **level_tables(schedule, starts, "start"),
                  **level_tables(schedule, sigmas[1:], "end"), "heun_step": sigmas[1:] - starts, "renoise_scale": scale}
        if schedule.signal_slope != 0:
            tables["renoise"] = torch.where(jump, alpha_start / schedule.alpha(before), 1.0)
        return tables

    def step(self, model, x, plan, i, carry=None, noise=None):
        if self.stochastic and noise is None:
            raise sfumato.SamplingError("restart is stochastic: step() needs `noise` shaped like x")
        tables = self.tables(plan, "heun_step")
        if self.stochastic:  # the jump up to the restart level (a zero scale off the jumps)
            if "renoise" in tables:
                x = x * tables["renoise"][i]
            x = torch.addcmul(x, tables["renoise_scale"][i], noise)
        prediction = predict_at(model, x, tables, "start", i)
        d = self.derivative(plan, prediction)
        x_euler = torch.addcmul(x, d, tables["heun_step"][i])
        if i == len(plan) - 1:  # to sigma = 0: Euler
            return sfumato.StepResult(x_euler, prediction.x0, {})
        trial = predict_at(model, x_euler, tables, "end", i)
        x = x + (d + self.derivative(plan, trial)) / 2 * tables["heun_step"][i]
        return sfumato.StepResult(x, trial.x0, {})
