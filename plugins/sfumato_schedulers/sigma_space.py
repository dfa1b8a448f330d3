"""The base of samplers that work in sigma space (Euler, Euler ancestral, Heun, DPM-Solver++).

They integrate the probability-flow ODE (or SDE) of Karras et al. 2022
(https://arxiv.org/abs/2206.00364) in the variable ``x = x0 + sigma * eps``, where
``sigma = sqrt((1 - alpha_bar) / alpha_bar)``; the variance-preserving sample the model was trained
on is ``x / sqrt(sigma^2 + 1)``. This is k-diffusion's parameterisation and diffusers' for its
discrete Euler and Heun schedulers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

import sfumato

from .spacing import SigmaStepOptions, keep_strength, spaced_timesteps


class SigmaSpaceScheduler(sfumato.Scheduler):
    """Plans sigmas with a trailing 0, noises as ``x0 + sigma * noise`` and calls the model on the
    variance-preserving sample. Subclasses implement ``step`` and may change the two rules below.

    The noise levels come from the spec's sigma schedule (``sigmas``: any registered one, built
    with ``sfumato.build_sigma_schedule``), or, for ``"default"``, from the spaced timesteps.
    """

    Spec = SigmaStepOptions

    def spaced_timesteps(self, num_train_timesteps: int, steps: int) -> np.ndarray:
        """The timesteps of ``sigmas = "default"`` plans: the spec's spacing, unrounded (as
        diffusers' Euler and Heun schedulers)."""
        return spaced_timesteps(num_train_timesteps, steps, self.spec.spacing, self.spec.steps_offset)

    @staticmethod
    def interpolated_sigmas(schedule: sfumato.NoiseSchedule, timesteps: np.ndarray) -> np.ndarray:
        """Sigmas at ``timesteps``, linear in sigma between training timesteps (float32).

        This is diffusers' rule for fractional timesteps (``linspace`` spacing of Euler and Heun);
        the plan then gives the model the timestep of each sigma under the schedule's own
        log-sigma interpolation, so the model's input and its noise level always agree.
        """
        table = schedule.sigmas.numpy()
        return np.interp(timesteps, np.arange(len(table)), table).astype(np.float32)

    def init_noise_sigma(self, sigmas: Tensor) -> float:
        """Scale of the starting noise. diffusers' Euler and Heun use the largest sigma, or
        ``sqrt(sigma_max^2 + 1)`` (the standard deviation of ``x0 + sigma * eps`` for unit-variance
        data) with leading spacing."""
        sigma_max = float(sigmas.max())
        return sigma_max if self.spec.spacing in ("linspace", "trailing") else (sigma_max**2 + 1) ** 0.5

    def plan(self, schedule, steps=None, strength=1.0):
        steps = steps or self.spec.steps
        sigma_schedule = sfumato.build_sigma_schedule(self.spec.sigmas)
        if sigma_schedule is None:  # "default": the sigmas of the spaced timesteps
            timesteps = self.spaced_timesteps(schedule.num_timesteps, steps)
            sigmas = torch.from_numpy(self.interpolated_sigmas(schedule, timesteps))
        else:
            sigmas = checked_sigmas(sigma_schedule, sigma_schedule.sigmas(schedule, steps), steps)
        timesteps = schedule.timestep_at(sigmas)  # fractional where a sigma falls between timesteps
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])  # (N + 1,): every run ends clean
        plan = sfumato.SamplingPlan(timesteps, sigmas, self.init_noise_sigma(sigmas), schedule,
                                    extra=self.step_tables(sigmas))
        return keep_strength(plan, strength)

    def step_tables(self, sigmas: Tensor) -> dict[str, Tensor]:
        """Per-step values computed once per plan, so a step only indexes them: the model-input
        scale ``sqrt(sigma^2 + 1)`` ``[N + 1]`` and ``sigma_next - sigma`` ``[N]``. Subclasses may
        add their own (each table's first axis is the step)."""
        return {"input_scale": (sigmas**2 + 1).sqrt(), "dsigma": sigmas[1:] - sigmas[:-1]}

    def noised(self, x0, noise, plan, i):
        return x0 + plan.sigmas[i] * noise

    def predict(self, model: sfumato.Model, x: Tensor, plan: sfumato.SamplingPlan, i: int) -> sfumato.Prediction:
        """The model's prediction for the sigma-space sample ``x`` at step boundary ``i``.

        Its ``eps`` is the ODE's derivative ``dx/dsigma = (x - x0) / sigma``; steps use it directly
        rather than differencing ``x - x0``, which loses every digit of x0 where sigma is large.
        """
        t = plan.timesteps[i].expand(x.shape[0])
        if plan.extra and "input_scale" in plan.extra:
            return model(x / plan.extra["input_scale"][i], t)
        return model(x / (plan.sigmas[i] ** 2 + 1).sqrt(), t)  # a plan built by hand

    @staticmethod
    def dsigma(plan: sfumato.SamplingPlan, i: int) -> Tensor:
        """``sigma_next - sigma`` of step ``i`` (negative: sampling goes down in sigma)."""
        if plan.extra and "dsigma" in plan.extra:
            return plan.extra["dsigma"][i]
        return plan.sigmas[i + 1] - plan.sigmas[i]


def checked_sigmas(sigma_schedule: sfumato.SigmaSchedule, sigmas: Tensor, steps: int) -> Tensor:
    """``sigmas`` as float32 if they keep the ``SigmaSchedule`` contract (``[steps]``, finite,
    positive, strictly decreasing), so that a faulty schedule is named here, not found as NaN later."""
    if sigmas.shape != (steps,):
        raise sigma_schedule.spec_error(f"gave shape {tuple(sigmas.shape)} for {steps} steps, not ({steps},)")
    if not (torch.isfinite(sigmas).all() and (sigmas > 0).all()):
        raise sigma_schedule.spec_error(f"gave levels that are not finite and positive for {steps} steps")
    rising = (sigmas.diff() >= 0).nonzero()
    if len(rising):
        i = int(rising[0])
        raise sigma_schedule.spec_error(
            f"gave levels that do not decrease for {steps} steps: level {i} is {float(sigmas[i]):.6g}, "
            f"level {i + 1} is {float(sigmas[i + 1]):.6g}"
        )
    return sigmas.to(torch.float32)
