"""The base of samplers that work in sigma space (Euler, Euler ancestral, Heun, DPM-Solver++).

They integrate the probability-flow ODE (or SDE) of Karras et al. 2022
(https://arxiv.org/abs/2206.00364) in the formulation's native variable
``x = alpha(sigma) x0 + sigma eps`` (``sfumato.Formulation``): for the VP formulation
``alpha = 1`` and ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, k-diffusion's parameterisation and
diffusers' for its discrete Euler and Heun schedulers; for flow matching ``alpha = 1 - sigma``. The
ODE is ``dx/dsigma = (x - x0) / sigma`` for both (``Formulation.derivative``), and the model is
called on the variance-preserving sample ``x / sqrt(alpha^2 + sigma^2)``.
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

    def init_noise_sigma(self, sigmas: Tensor, schedule: sfumato.Formulation, spaced: bool) -> float:
        """Scale of the starting unit-variance noise: ``sqrt(alpha_0^2 + sigma_0^2)``, the standard
        deviation of the native sample at the first level for unit-variance data (1 for flow
        matching, which starts at sigma = 1). The one exception keeps diffusers' Euler and Heun:
        levels from ``linspace`` or ``trailing`` timestep spacing (``spaced``: not the
        formulation's own default levels) start at ``sigma_0`` itself."""
        sigma_max = float(sigmas.max())
        if spaced and self.spec.spacing in ("linspace", "trailing"):
            return sigma_max
        alpha = float(schedule.alpha(torch.tensor(sigma_max)))
        return (alpha**2 + sigma_max**2) ** 0.5

    def plan(self, schedule, steps=None, strength=1.0):
        steps = steps or self.spec.steps
        sigma_schedule = sfumato.build_sigma_schedule(self.spec.sigmas)
        sigmas = None if sigma_schedule is not None else schedule.default_sigmas(steps)
        spaced = sigmas is None
        if sigma_schedule is not None:
            sigmas = checked_sigmas(sigma_schedule, sigma_schedule.sigmas(schedule, steps), steps)
        elif sigmas is None:  # "default" of a formulation without its own levels: the spaced timesteps
            timesteps = self.spaced_timesteps(schedule.num_timesteps, steps)
            sigmas = torch.from_numpy(self.interpolated_sigmas(schedule, timesteps))
        timesteps = schedule.timestep_at(sigmas)  # fractional where a sigma falls between timesteps
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])  # (N + 1,): every run ends clean
        plan = sfumato.SamplingPlan(timesteps, sigmas, self.init_noise_sigma(sigmas, schedule, spaced), schedule,
                                    extra=self.step_tables(sigmas, schedule))
        return keep_strength(plan, strength)

    def step_tables(self, sigmas: Tensor, schedule: sfumato.Formulation) -> dict[str, Tensor]:
        """Per-step values computed once per plan, so a step only indexes them: the model-input
        scale ``sqrt(alpha^2 + sigma^2)`` ``[N + 1]`` (``sqrt(1 + sigma^2)`` for VP) and
        ``sigma_next - sigma`` ``[N]``. Subclasses may add their own (each table's first axis is
        the step)."""
        alphas = schedule.alpha(sigmas)
        return {"input_scale": (alphas**2 + sigmas**2).sqrt(), "dsigma": sigmas[1:] - sigmas[:-1]}

    def noised(self, x0, noise, plan, i):
        return plan.schedule.noised_native(x0, noise, plan.sigmas[i])

    def predict(self, model: sfumato.Model, x: Tensor, plan: sfumato.SamplingPlan, i: int) -> sfumato.Prediction:
        """The model's prediction for the sigma-space sample ``x`` at step boundary ``i``.

        Steps take the ODE's derivative ``dx/dsigma`` from it with ``derivative`` (for VP, its
        ``eps`` itself) rather than differencing ``x - x0``, which loses every digit of x0 where
        sigma is large.
        """
        t = plan.timesteps[i].expand(x.shape[0])
        if plan.extra and "input_scale" in plan.extra:
            return model(x / plan.extra["input_scale"][i], t)
        sigma = plan.sigmas[i]  # a plan built by hand
        return model(x / (plan.schedule.alpha(sigma) ** 2 + sigma**2).sqrt(), t)

    @staticmethod
    def derivative(plan: sfumato.SamplingPlan, prediction: sfumato.Prediction) -> Tensor:
        """``dx/dsigma`` of the native probability-flow ODE at ``prediction`` (``Formulation.derivative``)."""
        return plan.schedule.derivative(prediction)

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
