"""Parity with diffusers' schedulers: whole trajectories from the same unit-variance noise with a
fixed analytic denoiser, across beta schedules x prediction types x spacings x step counts.

Tolerance: max abs 1e-4 (float32), plus two float32 epsilons of the largest starting value. The
cosine schedule's sigma_max = 20291 starts sigma-space samplers at |x| ~ 7e4, where one float32
ulp is 8e-3; Heun's trapezoidal step additionally multiplies rounding by sigma_0 / sigma_1 (up to
3e6), so for Heun the tolerance also admits four times diffusers' own float32-vs-float64 difference.
"""

from __future__ import annotations

import itertools

import diffusers
import pytest
import torch
from torch import Tensor

import sfumato
import sfumato_schedulers

BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}
#: Every beta schedule for the newer samplers' sweeps: SD's in the default run, the others with
#: ``-m slow`` (CI runs them); the six original samplers sweep all three by default.
BETAS_SD_FIRST = [b if b == "scaled_linear" else pytest.param(b, marks=pytest.mark.slow) for b in BETAS]
SPACINGS = ("leading", "trailing", "linspace")
STEPS = (1, 2, 10, 50)
SHAPE = (2, 3, 4, 4)
DIFFUSERS = {  # sfumato type -> (diffusers class, the config that makes it the same method)
    "ddpm": (diffusers.DDPMScheduler, {"clip_sample": False}),
    "ddim": (diffusers.DDIMScheduler, {"clip_sample": False}),
    "euler": (diffusers.EulerDiscreteScheduler, {}),
    "euler-ancestral": (diffusers.EulerAncestralDiscreteScheduler, {}),
    "heun": (diffusers.HeunDiscreteScheduler, {}),
    "dpmpp-2m": (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
SEEDED_STEP = (diffusers.DDPMScheduler, diffusers.DDIMScheduler, diffusers.EulerAncestralDiscreteScheduler)


def raw_output(x: Tensor, t: Tensor, time_dependent: bool = True) -> Tensor:
    """The analytic network: ``0.9 x + 0.3 * channel offset * (1 + t / 1000)``."""
    offset = torch.linspace(-1, 1, x.shape[1]).reshape(1, -1, 1, 1)
    scale = 1 + t.float().reshape(-1, 1, 1, 1) / 1000 if time_dependent else 1.0
    return 0.9 * x + 0.3 * offset * scale


def schedule_for(betas: str, prediction: str, **fields) -> sfumato.NoiseSchedule:
    spec = {"betas": betas, "prediction": prediction, "beta_start": 0.00085, "beta_end": 0.012, **fields}
    return sfumato.NoiseSchedule(sfumato.DiffusionSpec(**spec))


def build(spec: dict) -> sfumato.Scheduler:
    return sfumato_schedulers.SCHEDULERS_BY_TYPE[spec["type"]].from_spec(spec)


def reference(kind: str, schedule: sfumato.NoiseSchedule, **config):
    cls, fixed = DIFFUSERS[kind]
    spec = schedule.spec
    zero_snr = {"rescale_betas_zero_snr": True} if spec.zero_terminal_snr else {}
    return cls(
        num_train_timesteps=spec.timesteps, beta_start=spec.beta_start, beta_end=spec.beta_end,
        beta_schedule=BETAS[spec.betas], prediction_type=PREDICTIONS[spec.prediction], **zero_snr, **{**fixed, **config},
    )


def step_noise(i: int, dtype=torch.float32) -> Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 + i)).to(dtype)


def start_noise(dtype=torch.float32) -> Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)


def run_sfumato(scheduler, schedule, steps, time_dependent=True, strength=1.0) -> tuple[Tensor, float]:
    """Final sample and ``max |x_T|``; step i of a stochastic sampler gets ``step_noise(i)``."""

    def model(x, t):
        return schedule.to_prediction(raw_output(x, t, time_dependent), x, t)

    plan = scheduler.plan(schedule, steps, strength)
    x, carry = start_noise() * plan.init_noise_sigma, {}
    start = float(x.abs().max())
    for i in range(len(plan)):
        x, _, carry = scheduler.step(model, x, plan, i, carry, step_noise(i) if scheduler.stochastic else None)
    return x, start


def run_diffusers(scheduler, steps, time_dependent=True, dtype=torch.float32, **step_kwargs) -> Tensor:
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "set_begin_index"):  # repeated karras timesteps confuse its lookup
        scheduler.set_begin_index(0)
    x = start_noise(dtype) * scheduler.init_noise_sigma
    heun = isinstance(scheduler, diffusers.HeunDiscreteScheduler)
    for n, t in enumerate(scheduler.timesteps):
        i = (n + 1) // 2 if heun else n  # Heun lists each step's second evaluation separately
        output = raw_output(scheduler.scale_model_input(x, t), t.float().expand(SHAPE[0]), time_dependent)
        kwargs = dict(step_kwargs)
        if isinstance(scheduler, SEEDED_STEP) and "variance_noise" not in kwargs:
            kwargs["generator"] = torch.Generator().manual_seed(1000 + i)
        if "variance_noise" in kwargs:
            kwargs["variance_noise"] = step_noise(i, dtype)
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x


def compare(kind, schedule, spec, steps, time_dependent=True, dtype_gap=False, step_kwargs=None, **config) -> tuple[float, float]:
    """``(error, tolerance)`` of one run against diffusers."""
    ours, start = run_sfumato(build(spec), schedule, steps, time_dependent)
    theirs = run_diffusers(reference(kind, schedule, **config), steps, time_dependent, **(step_kwargs or {}))
    tolerance = 1e-4 + 2 * torch.finfo(torch.float32).eps * start
    if dtype_gap:
        exact = run_diffusers(reference(kind, schedule, **config), steps, time_dependent, torch.float64, **(step_kwargs or {}))
        tolerance += 4 * float((theirs.double() - exact).abs().max())
    return float((ours - theirs).abs().max()), tolerance


@pytest.mark.parametrize("betas", list(BETAS))
@pytest.mark.parametrize("kind", list(DIFFUSERS))
def test_trajectories_match_diffusers(kind, betas):
    failures = []
    for prediction, spacing, steps in itertools.product(PREDICTIONS, SPACINGS, STEPS):
        if kind == "euler-ancestral" and prediction == "sample":
            continue  # EulerAncestralDiscreteScheduler raises NotImplementedError for it
        error, tolerance = compare(
            kind, schedule_for(betas, prediction), {"type": kind, "spacing": spacing}, steps,
            dtype_gap=kind == "heun", timestep_spacing=spacing,
        )
        if not error <= tolerance:
            failures.append(f"{prediction} {spacing} {steps} steps: {error:.2e} > {tolerance:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("sigmas", ["karras", "exponential"])
@pytest.mark.parametrize("kind", ["euler", "heun", "dpmpp-2m"])
def test_respaced_sigmas_match_diffusers(kind, sigmas):
    """diffusers' DPMSolverMultistepScheduler stores its timesteps as integers (karras ones
    rounded, except for the cosine schedule, the others truncated) but converts the output at
    the exact sigma; sfumato gives the model the fractional timestep of the sigma it sees, so for
    that class the denoiser is made time-independent."""
    failures = []
    for betas, prediction, steps in itertools.product(BETAS, PREDICTIONS, (2, 10, 25)):
        error, tolerance = compare(
            kind, schedule_for(betas, prediction), {"type": kind, "sigmas": sigmas}, steps,
            time_dependent=kind != "dpmpp-2m", dtype_gap=kind == "heun",
            **{f"use_{sigmas}_sigmas": True},
        )
        if not error <= tolerance:
            failures.append(f"{betas} {prediction} {steps} steps: {error:.2e} > {tolerance:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "spec, config, step_kwargs",
    [
        ({"type": "ddim", "eta": 0.5}, {}, {"eta": 0.5, "variance_noise": True}),
        ({"type": "ddim", "eta": 1.0, "spacing": "trailing"}, {"timestep_spacing": "trailing"}, {"eta": 1.0, "variance_noise": True}),
        ({"type": "ddpm", "variance": "fixed_large"}, {"variance_type": "fixed_large"}, {}),
        ({"type": "ddpm", "thresholding": "clip", "clip_sample_range": 1.5}, {"clip_sample": True, "clip_sample_range": 1.5}, {}),
        ({"type": "ddpm", "thresholding": "dynamic", "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.2},
         {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.2}, {}),
        ({"type": "ddim", "thresholding": "dynamic", "sample_max_value": 2.0}, {"thresholding": True, "sample_max_value": 2.0}, {}),
        ({"type": "ddim", "set_alpha_to_one": False, "steps_offset": 1}, {"set_alpha_to_one": False, "steps_offset": 1}, {}),
        ({"type": "euler", "spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "leading", "steps_offset": 1}, {}),
        ({"type": "dpmpp-2m", "spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "leading", "steps_offset": 1}, {}),
    ],
    ids=lambda value: str(value)[:40],
)
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_options_match_diffusers(spec, config, step_kwargs, prediction):
    """Stochastic steps get the same noise (diffusers through its generator or variance_noise)."""
    for steps in (2, 20):
        error, tolerance = compare(spec["type"], schedule_for("linear", prediction), spec, steps, step_kwargs=step_kwargs, **config)
        assert error <= tolerance, f"{steps} steps: {error:.2e}"


@pytest.mark.parametrize("kind", ["ddim", "ddpm", "euler", "dpmpp-2m"])
def test_zero_terminal_snr_matches_diffusers(kind, tolerance=1e-3):
    """v-prediction with trailing spacing (Lin et al. 2023). sfumato converts the model's output
    at the last timestep with alpha_bar = 2^-24 (sigma 4096, where sigma-space samplers start, as
    in diffusers' Euler); diffusers' DDPM and DDIM use alpha_bar = 0 there, a 2.4e-4 difference in x0."""
    schedule = schedule_for("scaled_linear", "v", zero_terminal_snr=True)
    for steps in (2, 25):
        error, _ = compare(kind, schedule, {"type": kind, "spacing": "trailing"}, steps, timestep_spacing="trailing")
        assert error <= tolerance, f"{steps} steps: {error:.2e}"


@pytest.mark.parametrize("kind", list(DIFFUSERS))
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_strength_plan_matches_diffusers_img2img(kind, strength):
    """diffusers' img2img pipelines keep ``scheduler.timesteps[t_start * order:]``."""
    schedule = schedule_for("scaled_linear", "epsilon")
    theirs = reference(kind, schedule)
    theirs.set_timesteps(20)
    t_start = 20 - int(20 * strength)
    plan = build({"type": kind}).plan(schedule, 20, strength)
    expected = theirs.timesteps[t_start * theirs.order:][:: theirs.order].float()
    # Fractional (linspace) timesteps of sigma-space plans move to the timestep of their sigma.
    torch.testing.assert_close(plan.timesteps, expected, rtol=0, atol=0.01)


@pytest.mark.parametrize("kind", list(DIFFUSERS))
def test_noised_matches_diffusers_add_noise(kind):
    schedule = schedule_for("scaled_linear", "epsilon")
    theirs = reference(kind, schedule)
    theirs.set_timesteps(10)
    plan = build({"type": kind}).plan(schedule, 10)
    x0, noise = start_noise(), step_noise(0)
    for i in (0, 4):
        expected = theirs.add_noise(x0, noise, theirs.timesteps[i * theirs.order: i * theirs.order + 1])
        ours = build({"type": kind}).noised(x0, noise, plan, i)
        if kind == "dpmpp-2m":  # diffusers' DPM-Solver keeps the variance-preserving sample
            ours = ours / (plan.sigmas[i] ** 2 + 1).sqrt()
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_switching_sampler_changes_only_the_type():
    """The same [scheduler] table runs every sampler when only `type` changes."""
    schedule = schedule_for("scaled_linear", "epsilon")
    table = {"steps": 8, "spacing": "trailing", "steps_offset": 0}
    finals = {}
    for kind in DIFFUSERS:
        scheduler = sfumato.build("scheduler", {**table, "type": kind})
        finals[kind], _ = run_sfumato(scheduler, schedule, None)
        assert torch.isfinite(finals[kind]).all()
    assert len({round(float(x.sum()), 3) for x in finals.values()}) == len(finals)
