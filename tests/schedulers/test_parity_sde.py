"""Parity of the stochastic samplers with diffusers and k-diffusion, given the reference's noise:
whole trajectories from the same unit-variance start with the analytic network of
``test_parity`` (same tolerances: max abs 1e-4 plus two float32 epsilons of the largest starting
value).

k-diffusion is vendored (``kdiffusion_reference``); it works on ``x = x0 + sigma eps`` with a
denoiser ``D(x, sigma)``, here the same analytic network called as sfumato calls it (on
``x / sqrt(1 + sigma^2)`` at the timestep of sigma). Independent draws reach both libraries in
the same order; Brownian samplers give both the increments of one ``sfumato.brownian`` path.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from unittest import mock

import diffusers
import pytest
import torch
from torch import Tensor

import sfumato
import sfumato_schedulers
from sfumato.brownian import BrownianPath
from sfumato.sampling import sampler_noise
from schedulers import kdiffusion_reference as kdiffusion
from schedulers.test_parity import BETAS, BETAS_SD_FIRST, PREDICTIONS, SHAPE, raw_output, schedule_for, start_noise, step_noise

SPACINGS = ("leading", "trailing", "linspace")
STEPS = (1, 2, 10, 50)


def build(spec: dict) -> sfumato.Scheduler:
    return sfumato_schedulers.SCHEDULERS_BY_TYPE[spec["type"]].from_spec(spec)


def sfumato_model(schedule, time_dependent=True):
    def model(x, t):
        return schedule.to_prediction(raw_output(x, t, time_dependent), x, t)

    return model


def run_sfumato(scheduler, plan, noise: Tensor | None, time_dependent=True) -> tuple[Tensor, float]:
    """Final sample and ``max |x_T|``; step ``i`` gets ``noise[i]``."""
    model = sfumato_model(plan.schedule, time_dependent)
    x, carry = start_noise() * plan.init_noise_sigma, {}
    start = float(x.abs().max())
    for i in range(len(plan)):
        x, _, carry = scheduler.step(model, x, plan, i, carry, None if noise is None else noise[i])
    return x, start


def independent_noise(steps: int) -> Tensor:
    """``[steps, *SHAPE]``: ``step_noise(i)`` for step ``i``."""
    return torch.stack([step_noise(i) for i in range(steps)])


def kdiffusion_denoiser(schedule, time_dependent=True):
    """``D(x, sigma)`` on k-diffusion's ``x = x0 + sigma eps`` (the VP formulation's native sample)."""

    def denoise(x, sigma):
        t = schedule.timestep_at(sigma[:1]).expand(x.shape[0])
        x_t = x / (sigma[0] ** 2 + 1).sqrt()
        return schedule.to_prediction(raw_output(x_t, t, time_dependent), x_t, t).x0

    return denoise


def in_order(noise: Tensor):
    """A k-diffusion noise sampler handing out ``noise[0], noise[1], ...`` call by call."""
    draws = iter(noise)
    return lambda sigma, sigma_next: next(draws)


def reference_config(schedule: sfumato.NoiseSchedule) -> dict:
    """The diffusers scheduler config of ``schedule``'s training schedule."""
    spec = schedule.spec
    return {"num_train_timesteps": spec.timesteps, "beta_start": spec.beta_start, "beta_end": spec.beta_end,
            "beta_schedule": BETAS[spec.betas], "prediction_type": PREDICTIONS[spec.prediction]}


def tolerance(start: float) -> float:
    return 1e-4 + 2 * torch.finfo(torch.float32).eps * start


# -- dpm2-ancestral ---------------------------------------------------------------------------


def run_diffusers(scheduler, steps, time_dependent=True, dtype=torch.float32, brownian=None, calls=2,
                  **step_kwargs) -> Tensor:
    """A diffusers scheduler whose noise comes from ``randn_tensor`` or a ``noise_sampler``. Its
    two-stage schedulers (``calls = 2``) list every step's second evaluation as a timestep of its
    own. Step ``i``'s noise, drawn on its last call, is ``step_noise(i)`` (in ``dtype``), or,
    given ``brownian`` (a noise-sampler factory), every draw is that path's increment."""
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)  # repeated (rounded) karras timesteps confuse its lookup
    if brownian is not None:
        scheduler.noise_sampler = brownian(dtype)
    x = start_noise(dtype) * scheduler.init_noise_sigma
    module = sys.modules[type(scheduler).__module__]
    for n, t in enumerate(scheduler.timesteps):
        output = raw_output(scheduler.scale_model_input(x, t), t.float().expand(SHAPE[0]), time_dependent)
        with mock.patch.object(module, "randn_tensor", lambda *args, n=n, **kwargs: step_noise(n // calls, dtype),
                               create=True):
            x = scheduler.step(output, t, x, **step_kwargs).prev_sample
    return x


def two_stage_error(ours: Tensor, start: float, make_reference, steps: int, time_dependent=True,
                    brownian=None) -> tuple[float, float]:
    """``(error, tolerance)`` against a two-stage diffusers scheduler (``within_float32_of`` its
    float64 run): its second stage divides ``x - x0`` by the midpoint's sigma, which near
    sigma_min loses digits that sfumato, stepping along eps, keeps."""
    theirs = run_diffusers(make_reference(), steps, time_dependent, brownian=brownian)
    exact = run_diffusers(make_reference(), steps, time_dependent, torch.float64, brownian)
    return within_float32_of(ours, theirs, exact, start)


def brownian_noise(scheduler, plan, seed: int = 7):
    """``(noise, sampler)``: sfumato's noise for ``plan`` (increments of one ``BrownianPath``,
    drawn by the sampling loop's ``sampler_noise``) and a k-diffusion noise-sampler factory
    ``sampler(dtype)(sigma, sigma_next)`` that queries the same path."""
    noise = sampler_noise(scheduler, plan, SHAPE, torch.Generator().manual_seed(seed), "cpu")
    levels = scheduler.noise_levels(plan).double()
    path_seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed)))  # as sampler_noise
    path = BrownianPath(float(levels.min()), float(levels.max()), SHAPE, path_seed)

    def sampler(dtype):
        def increment(sigma, sigma_next):
            a, b = float(sigma), float(sigma_next)
            return ((path(b) - path(a)) / abs(b - a) ** 0.5).to(dtype)

        return increment

    first = noise[0, 0] if scheduler.noise_draws > 1 else noise[0]
    torch.testing.assert_close(first, sampler(torch.float32)(levels[0, 0], levels[0, 1]))  # the same path
    return noise, sampler


def split_cancels_digits(plan, dtype=torch.float32) -> bool:
    """Whether a reference that computes the ancestral split in ``dtype`` as k-diffusion and
    diffusers write it, ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``, gets a (non-final)
    ``sigma_down`` wrong by more than 1e-4: that form loses ``(sigma_next / sigma_down)^2`` ulps
    (2 linspace steps in float32: 0.0285 for 0.0292; the cosine schedule's first step from sigma
    20291: 2%, or 0 and a NaN midpoint). sfumato's ``ancestral_split`` does not cancel."""
    sigma_down = plan.sigmas[:-2] + plan.extra["down_step"][:-1]
    return bool(((plan.sigmas[1:-1] / sigma_down) ** 2 * torch.finfo(dtype).eps > 1e-4).any())


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_dpm2_ancestral_matches_diffusers(betas):
    """KDPM2AncestralDiscreteScheduler (epsilon and v; it has no sample prediction), except
    where its ancestral ``split_cancels_digits`` (cosine, 2 trailing steps: float32 rounds the
    first ``sigma_down`` to 0 and diffusers' midpoint becomes NaN)."""
    failures = []
    for prediction, spacing, steps in itertools.product(("epsilon", "v"), SPACINGS, STEPS):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "dpm2-ancestral", "spacing": spacing})
        plan = scheduler.plan(schedule, steps)
        if split_cancels_digits(plan):
            continue
        ours, start = run_sfumato(scheduler, plan, independent_noise(steps))
        error, bound = two_stage_error(ours, start, lambda: diffusers.KDPM2AncestralDiscreteScheduler(
            **reference_config(schedule), timestep_spacing=spacing), steps)
        if not error <= bound:
            failures.append(f"{prediction} {spacing} {steps} steps: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("sigmas", ["karras", pytest.param("exponential", marks=pytest.mark.slow),
                                    pytest.param("beta", marks=pytest.mark.slow)])
def test_dpm2_ancestral_respaced_sigmas_match_diffusers(sigmas):
    """diffusers rounds karras timesteps to integers, so the network is time-independent here."""
    for betas, prediction, steps in itertools.product(BETAS, ("epsilon", "v"), (2, 10, 25)):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "dpm2-ancestral", "sigmas": sigmas})
        plan = scheduler.plan(schedule, steps)
        if split_cancels_digits(plan):
            continue
        ours, start = run_sfumato(scheduler, plan, independent_noise(steps), False)
        error, bound = two_stage_error(ours, start, lambda: diffusers.KDPM2AncestralDiscreteScheduler(
            **reference_config(schedule), **{f"use_{sigmas}_sigmas": True}), steps, False)
        assert error <= bound, f"{betas} {prediction} {steps} steps: {error:.2e} > {bound:.2e}"


# -- k-diffusion ------------------------------------------------------------------------------


def run_kdiffusion(sample, plan, noise, time_dependent=True, dtype=torch.float32, **options) -> Tensor:
    """A vendored k-diffusion sampler over ``plan``'s sigmas from sfumato's start, sigmas and
    sample in ``dtype``. ``noise``: a tensor handed out call by call, or a noise-sampler factory
    (``brownian_noise``)."""
    x = start_noise(dtype) * plan.init_noise_sigma
    noise_sampler = in_order(noise.to(dtype)) if isinstance(noise, Tensor) else noise(dtype)
    return sample(kdiffusion_denoiser(plan.schedule, time_dependent), x, plan.sigmas.to(dtype),
                  noise_sampler=noise_sampler, **options)


def kdiffusion_error(ours: Tensor, start: float, sample, plan, noise, **options) -> tuple[float, float]:
    """``(error, tolerance)`` against k-diffusion (``within_float32_of`` its float64 run): with the
    analytic network a large first step multiplies float32 rounding (2 steps from sigma 25 end
    near |x| = 400)."""
    theirs = run_kdiffusion(sample, plan, noise, **options)
    exact = run_kdiffusion(sample, plan, noise, dtype=torch.float64, **options)
    return within_float32_of(ours, theirs, exact, start)


def within_float32_of(ours: Tensor, theirs: Tensor, exact: Tensor, start: float) -> tuple[float, float]:
    """``(error, tolerance)`` of ``ours`` against the reference's float64 run ``exact``: the usual
    tolerance plus four times the reference's own float32 error (``theirs``), so that where the
    trajectory multiplies rounding both float32 runs may stray as far from it."""
    own = float((theirs.double() - exact).abs().max())
    return float((ours.double() - exact).abs().max()), tolerance(start) + 4 * own


ANCESTRAL = {  # sfumato type -> the k-diffusion sampler
    "dpm2-ancestral": kdiffusion.sample_dpm_2_ancestral,
    "dpmpp-2s-ancestral": kdiffusion.sample_dpmpp_2s_ancestral,
}


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("kind", list(ANCESTRAL))
def test_ancestral_samplers_match_kdiffusion(kind, eta):
    """Every beta schedule and prediction, default and karras sigmas, independent draws (except
    where even float64 ``split_cancels_digits``: the cosine schedule in 2 steps, 20291 to 0.006)."""
    failures = []
    for betas, prediction, sigmas, steps in itertools.product(BETAS, PREDICTIONS, ("default", "karras"), (2, 10, 25)):
        scheduler = build({"type": kind, "sigmas": sigmas, "eta": eta})
        plan = scheduler.plan(schedule_for(betas, prediction), steps)
        if split_cancels_digits(plan, torch.float64):
            continue
        noise = independent_noise(steps)
        ours, start = run_sfumato(scheduler, plan, noise)
        error, bound = kdiffusion_error(ours, start, ANCESTRAL[kind], plan, noise, eta=eta)
        if not error <= bound:
            failures.append(f"{betas} {prediction} {sigmas} {steps} steps: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


# -- dpmpp-sde --------------------------------------------------------------------------------


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_dpmpp_sde_matches_kdiffusion_and_diffusers(betas):
    """The same Brownian path in all three: k-diffusion's ``sample_dpmpp_sde`` (every prediction,
    default and karras sigmas, eta 1 and 0.5) and diffusers' ``DPMSolverSDEScheduler`` (epsilon
    and v, eta 1: it has no eta)."""
    failures = []
    for prediction, sigmas, steps, eta in itertools.product(PREDICTIONS, ("default", "karras"), (2, 10, 25),
                                                            (1.0, 0.5)):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "dpmpp-sde", "sigmas": sigmas, "eta": eta})
        plan = scheduler.plan(schedule, steps)
        noise, brownian = brownian_noise(scheduler, plan)
        ours, start = run_sfumato(scheduler, plan, noise, sigmas == "default")
        error, bound = kdiffusion_error(ours, start, kdiffusion.sample_dpmpp_sde, plan, brownian,
                                        time_dependent=sigmas == "default", eta=eta)
        if not error <= bound:
            failures.append(f"k-diffusion {prediction} {sigmas} {steps} steps eta {eta}: {error:.2e} > {bound:.2e}")
        if prediction == "sample" or eta != 1:
            continue
        flags = {"use_karras_sigmas": True} if sigmas == "karras" else {}
        error, bound = two_stage_error(ours, start, lambda: diffusers.DPMSolverSDEScheduler(
            **reference_config(schedule), **flags), steps, sigmas == "default", brownian)
        if not error <= bound:
            failures.append(f"diffusers {prediction} {sigmas} {steps} steps: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


# -- dpmpp-2m-sde, dpmpp-3m-sde ---------------------------------------------------------------


def run_multistep_diffusers(scheduler, steps, noise: Tensor, time_dependent=True, dtype=torch.float32) -> Tensor:
    """diffusers' DPMSolverMultistepScheduler with step ``i``'s ``variance_noise`` ``noise[i]``."""
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)
    x = start_noise(dtype) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        output = raw_output(scheduler.scale_model_input(x, t), t.float().expand(SHAPE[0]), time_dependent)
        x = scheduler.step(output, t, x, variance_noise=noise[i].to(dtype)).prev_sample
    return x


MULTISTEP_SDE = {  # sfumato spec -> (the k-diffusion sampler and its options, diffusers' config or None)
    "2m-sde midpoint": ({"type": "dpmpp-2m-sde"}, (kdiffusion.sample_dpmpp_2m_sde, {}),
                        {"solver_order": 2, "solver_type": "midpoint"}),
    "2m-sde heun": ({"type": "dpmpp-2m-sde", "solver_type": "heun"},
                    (kdiffusion.sample_dpmpp_2m_sde, {"solver_type": "heun"}),
                    {"solver_order": 2, "solver_type": "heun"}),
    # diffusers' third order has another D2 weight (dpmpp_3m_sde.py): test_3m_sde_against_diffusers
    "3m-sde": ({"type": "dpmpp-3m-sde"}, (kdiffusion.sample_dpmpp_3m_sde, {}), None),
}


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
@pytest.mark.parametrize("kind", list(MULTISTEP_SDE))
def test_multistep_sde_matches_kdiffusion_and_diffusers(kind, betas):
    """The same Brownian increments in all three: k-diffusion (every prediction, default and
    karras sigmas, eta 1 and 0.5) and diffusers' ``DPMSolverMultistepScheduler`` with
    ``algorithm_type = "sde-dpmsolver++"`` (eta 1, its only SDE; karras with a time-independent
    network, as test_parity explains)."""
    spec, (sample, options), config = MULTISTEP_SDE[kind]
    failures = []
    for prediction, sigmas, steps, eta in itertools.product(PREDICTIONS, ("default", "karras"), (2, 10, 25),
                                                            (1.0, 0.5)):
        schedule = schedule_for(betas, prediction)
        scheduler = build({**spec, "sigmas": sigmas, "eta": eta})
        plan = scheduler.plan(schedule, steps)
        noise, brownian = brownian_noise(scheduler, plan)
        time_dependent = sigmas == "default"
        ours, start = run_sfumato(scheduler, plan, noise, time_dependent)
        error, bound = kdiffusion_error(ours, start, sample, plan, brownian, time_dependent=time_dependent,
                                        eta=eta, **options)
        if not error <= bound:
            failures.append(f"k-diffusion {prediction} {sigmas} {steps} steps eta {eta}: {error:.2e} > {bound:.2e}")
        if config is None or eta != 1:
            continue
        flags = {"use_karras_sigmas": True} if sigmas == "karras" else {}

        def reference():
            return diffusers.DPMSolverMultistepScheduler(**reference_config(schedule), **flags, **config,
                                                         algorithm_type="sde-dpmsolver++")

        theirs = run_multistep_diffusers(reference(), steps, noise, time_dependent)
        exact = run_multistep_diffusers(reference(), steps, noise, time_dependent, torch.float64)
        error, bound = within_float32_of(ours, theirs, exact, start)
        if not error <= bound:
            failures.append(f"diffusers {prediction} {sigmas} {steps} steps: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


def corrected_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
    """diffusers' sde-dpmsolver++ third-order update with k-diffusion's ``D2`` weight
    ``(e^-2h - 1 + 2h) / (2h)^2 - 1/2`` in place of its ``(1 - e^-2h - 2h) / (2h)^2 - 1/2``."""
    levels = [self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index + 1 - k]) for k in range(4)]  # t, s0, s1, s2
    (alpha_t, sigma_t), (_, sigma_s0) = levels[:2]
    lambda_t, lambda_s0, lambda_s1, lambda_s2 = (alpha.log() - sigma.log() for alpha, sigma in levels)
    m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
    h = lambda_t - lambda_s0
    r0, r1 = (lambda_s0 - lambda_s1) / h, (lambda_s1 - lambda_s2) / h
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d1, d2 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)
    e = torch.exp(-2.0 * h)
    return (sigma_t / sigma_s0 * torch.exp(-h)) * sample + alpha_t * (1 - e) * m0 \
        + alpha_t * ((1 - e) / (-2.0 * h) + 1) * d1 - alpha_t * ((e - 1 + 2.0 * h) / (2.0 * h) ** 2 - 0.5) * d2 \
        + sigma_t * (1 - e).sqrt() * noise


def test_3m_sde_against_diffusers():
    """diffusers' ``DPMSolverMultistepScheduler`` (sde-dpmsolver++, solver_order 3, the "heun"
    second order of k-diffusion's warm-up) departs from sfumato by its ``D2`` weight
    (``dpmpp_3m_sde.py``); with that weight corrected it agrees (25 steps: diffusers lowers the
    second-to-last step below 15)."""
    schedule = schedule_for("scaled_linear", "epsilon")
    scheduler = build({"type": "dpmpp-3m-sde"})
    plan = scheduler.plan(schedule, 25)
    noise, _ = brownian_noise(scheduler, plan)
    ours, start = run_sfumato(scheduler, plan, noise)

    def reference():
        return diffusers.DPMSolverMultistepScheduler(**reference_config(schedule), solver_order=3, solver_type="heun",
                                                     algorithm_type="sde-dpmsolver++")

    for corrected in (False, True):
        with mock.patch.object(diffusers.DPMSolverMultistepScheduler, "multistep_dpm_solver_third_order_update",
                               corrected_third_order_update) if corrected else contextlib.nullcontext():
            theirs = run_multistep_diffusers(reference(), 25, noise)
            exact = run_multistep_diffusers(reference(), 25, noise, dtype=torch.float64)
        error, bound = within_float32_of(ours, theirs, exact, start)
        assert (error <= bound) == corrected, f"corrected {corrected}: {error:.2e} against {bound:.2e}"


# -- lcm, tcd ---------------------------------------------------------------------------------


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_lcm_matches_diffusers(betas):
    """LCMScheduler, every prediction, its distillation schedule and x0 clipping, the same noise."""
    failures = []
    options = ({}, {"original_inference_steps": 100, "timestep_scaling": 5.0}, {"thresholding": "clip"})
    for prediction, steps, option in itertools.product(PREDICTIONS, (1, 2, 4, 8), options):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "lcm", **option})
        ours, start = run_sfumato(scheduler, scheduler.plan(schedule, steps), independent_noise(steps))
        config = {"clip_sample": True} if "thresholding" in option else option

        def reference():
            return diffusers.LCMScheduler(**reference_config(schedule), **config)

        theirs = run_diffusers(reference(), steps, calls=1)
        exact = run_diffusers(reference(), steps, dtype=torch.float64, calls=1)
        error, bound = within_float32_of(ours, theirs, exact, start)
        if not error <= bound:
            failures.append(f"{prediction} {steps} steps {option}: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_tcd_matches_diffusers(betas):
    """TCDScheduler, every prediction, gamma (its ``step(eta=...)``) 0, 0.3 and 1, the same noise."""
    failures = []
    for prediction, steps, gamma in itertools.product(PREDICTIONS, (1, 2, 4, 8), (0.0, 0.3, 1.0)):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "tcd", "gamma": gamma})
        noise = independent_noise(steps) if gamma else None
        ours, start = run_sfumato(scheduler, scheduler.plan(schedule, steps), noise)
        theirs = run_diffusers(diffusers.TCDScheduler(**reference_config(schedule)), steps, calls=1, eta=gamma)
        exact = run_diffusers(diffusers.TCDScheduler(**reference_config(schedule)), steps, dtype=torch.float64,
                              calls=1, eta=gamma)
        error, bound = within_float32_of(ours, theirs, exact, start)
        if not error <= bound:
            failures.append(f"{prediction} {steps} steps gamma {gamma}: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


def test_lcm_refuses_more_steps_than_its_distillation_schedule():
    schedule = schedule_for("scaled_linear", "epsilon")
    with pytest.raises(sfumato.SpecError, match=r"\[scheduler\] steps = 51.*original_inference_steps = 50"):
        build({"type": "lcm"}).plan(schedule, 51)
    with pytest.raises(sfumato.SpecError, match=r"\[scheduler\] original_inference_steps = 2000"):
        build({"type": "lcm", "original_inference_steps": 2000}).plan(schedule, 4)


# -- restart ----------------------------------------------------------------------------------


def restart_reference(denoise, x, levels: Tensor, restart_steps: int, times: int, low: float, high: float,
                      noise: Tensor) -> Tensor:
    """Restart sampling as Xu et al. 2023 and the WebUI's ``restart_sampler`` describe it, on
    k-diffusion's ``x = x0 + sigma eps`` with its ``(x - D) / sigma`` Heun steps (neither
    k-diffusion nor ComfyUI ships it; the WebUI's code is AGPL, so this is written from the
    algorithm). ``levels``: the base levels with the final 0; restarts follow the base level
    closest to ``low`` and climb to the one closest to ``high``, on ``restart_steps + 1`` Karras
    levels; the ``k``-th Heun step's jump (if it jumps) takes ``noise[k]``."""
    pairs = list(zip(levels[:-1], levels[1:]))
    i_low, i_high = int((levels[:-1] - low).abs().argmin()), int((levels[:-1] - high).abs().argmin())
    ramp = sfumato.spacing.karras_sigmas(float(levels[i_low]), float(levels[i_high]), restart_steps + 1)
    ramp = torch.from_numpy(ramp).to(levels.dtype)
    ramp[0], ramp[-1] = levels[i_high], levels[i_low]
    for _ in range(times):
        pairs[i_low:i_low] = list(zip(ramp[:-1], ramp[1:]))
    last = None
    ones = x.new_ones(x.shape[0])
    for k, (old, new) in enumerate(pairs):
        if last is not None and last < old:  # the jump up: forward noise
            x = x + noise[k].to(x.dtype) * (old**2 - last**2) ** 0.5
        d = (x - denoise(x, old * ones)) / old
        if new == 0:
            x = x + d * (new - old)
        else:
            x_2 = x + d * (new - old)
            x = x + (d + (x_2 - denoise(x_2, new * ones)) / new) / 2 * (new - old)
        last = new
    return x


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_restart_matches_its_reference(betas):
    """Every prediction, karras and default base levels, the WebUI's automatic restarts (20 and
    40 steps) and explicit ones; the base levels come from a plain Heun plan."""
    failures = []
    configs = ((20, {}), (40, {}), (12, {"restart_steps": 3, "restart_times": 2, "restart_max": 5.0}))
    for prediction, sigmas, (steps, options) in itertools.product(PREDICTIONS, ("karras", "default"), configs):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "restart", "sigmas": sigmas, **options})
        plan = scheduler.plan(schedule, steps)
        restart_steps, times = scheduler.restarts(steps)
        levels = build({"type": "heun", "sigmas": sigmas}).plan(schedule, steps - restart_steps * times).sigmas
        noise = independent_noise(steps)
        ours, start = run_sfumato(scheduler, plan, noise)

        def reference(dtype):
            x = start_noise(dtype) * plan.init_noise_sigma
            return restart_reference(kdiffusion_denoiser(schedule), x, levels.to(dtype), restart_steps, times,
                                     options.get("restart_min", 0.1), options.get("restart_max", 2.0), noise)

        error, bound = within_float32_of(ours, reference(torch.float32), reference(torch.float64), start)
        if not error <= bound:
            failures.append(f"{prediction} {sigmas} {steps} steps {options}: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


def test_restart_plans_every_heun_step_including_the_restarts():
    """20 karras steps: 11 base steps, one restart of 9 steps inserted after the base level closest
    to 0.1, starting from the one closest to 2; the levels rise exactly at the jump."""
    schedule = schedule_for("scaled_linear", "epsilon")
    plan = build({"type": "restart", "sigmas": "karras"}).plan(schedule, 20)
    base = build({"type": "heun", "sigmas": "karras"}).plan(schedule, 11).sigmas
    low, high = int((base[:-1] - 0.1).abs().argmin()), int((base[:-1] - 2.0).abs().argmin())
    assert len(plan) == 20
    rises = (plan.sigmas.diff() > 0).nonzero().flatten().tolist()
    assert rises == [low]  # the segment's first step jumps above the level it started at
    assert torch.equal(plan.sigmas[: low + 1], base[: low + 1]) and torch.equal(plan.sigmas[-(12 - low):], base[low:])
    assert plan.extra["renoise_scale"].nonzero().flatten().tolist() == [low]
    torch.testing.assert_close(schedule.sigma_at(plan.timesteps[low]), base[high], rtol=1e-4, atol=0)


def test_restart_says_when_its_restarts_do_not_fit():
    schedule = schedule_for("scaled_linear", "epsilon")
    with pytest.raises(sfumato.SpecError, match=r"\[scheduler\] restart_steps = 9 x restart_times = 1 leave 1 of 10"):
        build({"type": "restart", "restart_steps": 9}).plan(schedule, 10)
    with pytest.raises(sfumato.SpecError, match=r"\[scheduler\] restart_min = 0.1 and restart_max = 0.2"):
        build({"type": "restart", "restart_steps": 2, "restart_max": 0.2, "sigmas": "karras"}).plan(schedule, 6)


# -- er-sde -----------------------------------------------------------------------------------


def er_sde_reference(denoise, x, sigmas: Tensor, noise: Tensor, phi, max_stage: int = 3) -> Tensor:
    """ER-SDE-Solver-3 as Cui et al. 2023 and ComfyUI's ``sample_er_sde`` describe it, on
    k-diffusion's ``x = x0 + sigma eps`` (ComfyUI's code is GPL, so this is written from the
    algorithm): stage integrals as 200-point Riemann sums over ``[sigma_next, sigma)``."""
    old_denoised = old_derivative = None
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * ones)
        stage = min(max_stage, i + 1)
        level, level_next = sigmas[i], sigmas[i + 1]
        if level_next == 0:
            x = denoised
        else:
            r = phi(level_next) / phi(level)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dl = level_next - level
                width = -dl / 200
                points = level_next + torch.arange(200, dtype=sigmas.dtype) * width
                derivative = (denoised - old_denoised) / (level - sigmas[i - 1])
                x = x + (dl + (1 / phi(points)).sum() * width * phi(level_next)) * derivative
                if stage >= 3:
                    second = (derivative - old_derivative) / ((level - sigmas[i - 2]) / 2)
                    x = x + (dl**2 / 2 + ((points - level) / phi(points)).sum() * width * phi(level_next)) * second
                old_derivative = derivative
            x = x + noise[i].to(x.dtype) * (level_next**2 - level**2 * r**2).clamp(min=0).sqrt()
        old_denoised = denoised
    return x


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_er_sde_matches_its_reference(betas):
    """Every prediction, default and karras sigmas, both noise scalers (the reverse-time one at
    eta 1 and its ODE at 0), 1 to 3 stages."""
    scalers = {("er-sde", 1.0): lambda level: level * ((level**0.3).exp() + 10),
               ("reverse-time-sde", 1.0): lambda level: level**2, ("reverse-time-sde", 0.0): lambda level: level}
    failures = []
    for prediction, sigmas, steps, (scaler, eta), stages in itertools.product(
            PREDICTIONS, ("default", "karras"), (2, 10, 25), scalers, (3, 2)):
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "er-sde", "sigmas": sigmas, "noise_scaler": scaler, "eta": eta, "max_stage": stages})
        plan = scheduler.plan(schedule, steps)
        noise = independent_noise(steps)
        ours, start = run_sfumato(scheduler, plan, noise if scheduler.stochastic else None)

        def reference(dtype):
            x = start_noise(dtype) * plan.init_noise_sigma
            return er_sde_reference(kdiffusion_denoiser(schedule), x, plan.sigmas.to(dtype), noise,
                                    scalers[scaler, eta], stages)

        error, bound = within_float32_of(ours, reference(torch.float32), reference(torch.float64), start)
        if not error <= bound:
            failures.append(f"{prediction} {sigmas} {steps} steps {scaler} eta {eta} {stages} stages: "
                            f"{error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)


# -- sa-solver --------------------------------------------------------------------------------


def sa_solver_prefix(scheduler, plan, steps: int, noise: Tensor, time_dependent=True) -> tuple[Tensor, float]:
    """sfumato's sample after the first ``steps`` steps of ``plan``, as the variance-preserving
    sample diffusers keeps."""
    model = sfumato_model(plan.schedule, time_dependent)
    x, carry = start_noise() * plan.init_noise_sigma, {}
    start = float(x.abs().max())
    for i in range(steps):
        x, _, carry = scheduler.step(model, x, plan, i, carry, noise[i] if scheduler.stochastic else None)
    return x / (1 + plan.sigmas[steps] ** 2).sqrt(), start


def diffusers_prefix(scheduler, steps: int, stop: int, time_dependent=True, dtype=torch.float32) -> Tensor:
    """A diffusers scheduler's sample after ``stop`` of its ``steps`` steps; step ``i`` draws
    ``step_noise(i)``. In float64 its levels are float64 too, so that its coefficients (Lagrange
    weights over close lambdas, which cancel digits) are."""
    scheduler.set_timesteps(steps)
    scheduler.set_begin_index(0)  # repeated (rounded) karras timesteps confuse its lookup
    scheduler.sigmas = scheduler.sigmas.to(dtype)
    x = start_noise(dtype) * scheduler.init_noise_sigma
    module = sys.modules[type(scheduler).__module__]
    for i, t in enumerate(scheduler.timesteps[:stop]):
        output = raw_output(scheduler.scale_model_input(x, t), t.float().expand(SHAPE[0]), time_dependent)
        with mock.patch.object(module, "randn_tensor", lambda *args, i=i, **kwargs: step_noise(i, dtype)):
            x = scheduler.step(output, t, x).prev_sample
    return x


@pytest.mark.parametrize("betas", BETAS_SD_FIRST)
def test_sa_solver_matches_diffusers(betas):
    """SASolverScheduler (data prediction) with the same noise at every step, over the steps before
    the end, where the two lower their orders differently (and diffusers stops at its lowest level
    without denoising): predictor and corrector orders 1 to 4, tau 1 and 0.5 in its 200-800
    interval and 0, default and karras sigmas (karras with a time-independent network: diffusers
    rounds its timesteps). Not the order-4 predictor on the cosine schedule's karras levels: they
    fall from sigma 20291 to 1773 within timesteps 999 to 998, where sfumato's float32 timestep of
    each sigma moves the level its model output is converted at by 4e-5, and the order-4
    extrapolation multiplies that past the tolerance (2.8e-2 at 10 steps, in float64 too)."""
    failures = []
    orders = ((2, 2), (3, 4), (1, 1), (4, 3))
    for prediction, sigmas, steps, (p, c), tau in itertools.product(
            PREDICTIONS, ("default", "karras"), (10, 25), orders, (1.0, 0.5, 0.0)):
        if betas == "cosine" and sigmas == "karras" and p == 4:
            continue
        schedule = schedule_for(betas, prediction)
        scheduler = build({"type": "sa-solver", "sigmas": sigmas, "predictor_order": p, "corrector_order": c,
                           "tau": tau})
        plan = scheduler.plan(schedule, steps)
        stop = min(steps - p, steps - c + 1)
        time_dependent = sigmas == "default"
        ours, start = sa_solver_prefix(scheduler, plan, stop, independent_noise(steps), time_dependent)

        def reference():
            flags = {"use_karras_sigmas": True} if sigmas == "karras" else {}
            return diffusers.SASolverScheduler(**reference_config(schedule), predictor_order=p, corrector_order=c,
                                               tau_func=lambda t: tau if 200 <= t <= 800 else 0.0, **flags)

        theirs = diffusers_prefix(reference(), steps, stop, time_dependent)
        exact = diffusers_prefix(reference(), steps, stop, time_dependent, torch.float64)
        error, bound = within_float32_of(ours, theirs, exact, start)
        if not error <= bound:
            failures.append(f"{prediction} {sigmas} {steps} steps orders {p, c} tau {tau}: {error:.2e} > {bound:.2e}")
    assert not failures, "\n".join(failures)
