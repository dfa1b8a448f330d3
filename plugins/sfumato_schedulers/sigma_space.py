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
            sigmas = checked_sigmas(sigma_schedule, sigma_schedule.sigmas(schedule, steps), steps, schedule)
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

    def tables(self, plan: sfumato.SamplingPlan, name: str) -> dict[str, Tensor]:
        """The plan's per-step tables when they hold ``name`` (this sampler planned it), else
        this sampler's ``step_tables`` for the plan's levels (a plan built by hand)."""
        if plan.extra and name in plan.extra:
            return plan.extra
        return self.step_tables(plan.sigmas, plan.schedule)

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


def checked_sigmas(sigma_schedule: sfumato.SigmaSchedule, sigmas: Tensor, steps: int,
                   schedule: sfumato.Formulation) -> Tensor:
    """``sigmas`` as float32 if they keep the ``SigmaSchedule`` contract (``[steps]``, finite,
    positive, strictly decreasing) and lie where the formulation has a sample (its signal scale
    ``alpha(sigma)`` not negative: flow matching ends at sigma = 1), so that a faulty or
    mismatched schedule is named here, not found as NaN later."""
    if sigmas.shape != (steps,):
        raise sigma_schedule.spec_error(f"gave shape {tuple(sigmas.shape)} for {steps} steps, not ({steps},)")
    if not (torch.isfinite(sigmas).all() and (sigmas > 0).all()):
        raise sigma_schedule.spec_error(f"gave levels that are not finite and positive for {steps} steps")
    if (schedule.alpha(sigmas.double()) < 0).any():
        raise sigma_schedule.spec_error(
            f"gave levels up to {float(sigmas.max()):.6g}, beyond this model's largest noise level "
            f"{schedule.sigma_max:.6g} (its signal scale 1 - sigma would be negative); choose a schedule "
            "that spans the model's own levels (karras, simple, ...)")
    rising = (sigmas.diff() >= 0).nonzero()
    if len(rising):
        i = int(rising[0])
        raise sigma_schedule.spec_error(
            f"gave levels that do not decrease for {steps} steps: level {i} is {float(sigmas[i]):.6g}, "
            f"level {i + 1} is {float(sigmas[i + 1]):.6g}"
        )
    return sigmas.to(torch.float32)


def level_tables(schedule: sfumato.Formulation, sigmas: Tensor, name: str) -> dict[str, Tensor]:
    """``{name}_timestep`` and ``{name}_input_scale`` (``sqrt(alpha^2 + sigma^2)``) at native levels
    ``sigmas``: how the model is called at levels a sampler visits between the plan's boundaries
    (DPM-2's midpoints, a solver's stages); ``predict_at`` reads them."""
    alphas = schedule.alpha(sigmas)
    return {f"{name}_timestep": schedule.timestep_at(sigmas), f"{name}_input_scale": (alphas**2 + sigmas**2).sqrt()}


def predict_at(model: sfumato.Model, x: Tensor, tables: dict[str, Tensor], name: str, i: int) -> sfumato.Prediction:
    """The model's prediction for the native sample ``x`` at step ``i``'s level ``name`` of
    ``level_tables``."""
    return model(x / tables[f"{name}_input_scale"][i], tables[f"{name}_timestep"][i].expand(x.shape[0]))


def variance_exploding_levels(schedule: sfumato.Formulation, sigmas: Tensor) -> Tensor:
    """``s = sigma / alpha(sigma)``: the noise level of ``x / alpha = x0 + s eps``, where noise can be
    added and removed as in k-diffusion's variance-exploding samplers (``sigma`` itself for VP and
    EDM; ``inf`` where ``alpha = 0``, flow matching's pure noise)."""
    return sigmas / schedule.alpha(sigmas)


def ancestral_split(schedule: sfumato.Formulation, sigmas: Tensor, eta: float) -> dict[str, Tensor]:
    """The ancestral step of each interval of ``sigmas`` ``[N + 1]`` (k-diffusion's
    ``get_ancestral_step``), made on the variance-exploding levels ``s`` so that it keeps the
    marginal ``alpha x0 + sigma eps`` of every formulation:

        s_up   = min(s_next, eta * s_next * sqrt(1 - r^2)),        r = s_next / s (0 where s = inf)
        s_down = sqrt(s_next^2 - s_up^2) = s_next * sqrt(max(0, 1 - eta^2 (1 - r^2)))

    A step goes deterministically to ``sigma_down``, the native level of ``s_down``, then renoises
    with ``x_next = renoise * x_down + sigma_up * noise``. Returns ``[N]`` tables ``sigma_down``,
    ``sigma_up`` (``alpha_next * s_up``) and, only where the signal scale is not 1, ``renoise``
    (``alpha_next / alpha(sigma_down)``); for VP and EDM these are k-diffusion's values.

    ``s_down`` is computed in float64 from the second form: the references' first form cancels
    digits (it is ``s_next r`` at ``eta = 1``), losing ``(s_next / s_down)^2`` ulps (2% in float32 on
    the cosine schedule's first step from sigma 20291), which a sampler that evaluates the model
    between ``sigma`` and ``sigma_down`` (DPM-2's midpoint) would carry into the sample.
    """
    sigmas64 = sigmas.double()
    s = variance_exploding_levels(schedule, sigmas64)
    s_down, s_up = ancestral_levels(s[:-1], s[1:], eta)
    c = schedule.signal_slope
    if c == 0:
        tables = {"sigma_down": s_down, "sigma_up": s_up}
    else:
        sigma_down = s_down / (1 + c * s_down)  # the native level of s_down
        alpha_next = schedule.alpha(sigmas64[1:])
        tables = {"sigma_down": sigma_down, "sigma_up": alpha_next * s_up,
                  "renoise": alpha_next / schedule.alpha(sigma_down)}
    return {name: values.to(sigmas.dtype) for name, values in tables.items()}


def ancestral_levels(s: Tensor, s_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """``(s_down, s_up)`` of ancestral steps between variance-exploding levels ``s`` and
    ``s_next`` (any matching shapes; see ``ancestral_split``, which applies it to a plan)."""
    r = s_next / s  # 0 where s = inf
    s_up = torch.minimum(s_next, eta * s_next * (1 - r**2).sqrt())
    return s_next * (1 - eta**2 * (1 - r**2)).clamp(min=0).sqrt(), s_up
