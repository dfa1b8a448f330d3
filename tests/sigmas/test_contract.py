"""Every registered schedule keeps the ``SigmaSchedule`` contract on both test formulations:
``[steps]`` float32 levels, finite, positive and strictly decreasing, for any step count; and it
uses only the ``sfumato.NoiseLevels`` members (``FakeFormulation`` has no others)."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_sigmas
from sigmas.formulations import FakeFormulation, stable_diffusion

FORMULATIONS = {"stable-diffusion": stable_diffusion(), "fake": FakeFormulation()}
#: Schedules that span the model's whole range: the first level is sigma_max, the last sigma_min.
SPANNING = ("karras", "exponential", "polyexponential", "beta", "kl-optimal", "normal")


@pytest.mark.parametrize("formulation", list(FORMULATIONS))
@pytest.mark.parametrize("name", list(sfumato_sigmas.SIGMA_SCHEDULES_BY_TYPE))
def test_levels_keep_the_contract(name, formulation):
    levels_of = sfumato.build_sigma_schedule(name).sigmas
    for steps in (1, 2, 3, 10, 37, 120):
        levels = levels_of(FORMULATIONS[formulation], steps)
        assert levels.shape == (steps,) and levels.dtype == torch.float32, f"{steps} steps: {levels}"
        assert torch.isfinite(levels).all() and (levels > 0).all(), f"{steps} steps: {levels}"
        assert (levels.diff() < 0).all(), f"{steps} steps: levels must strictly decrease: {levels}"


@pytest.mark.parametrize("formulation", list(FORMULATIONS))
@pytest.mark.parametrize("name", SPANNING)
def test_spanning_schedules_run_from_sigma_max_to_sigma_min(name, formulation):
    model = FORMULATIONS[formulation]
    levels = sfumato.build_sigma_schedule(name).sigmas(model, 12)
    torch.testing.assert_close(float(levels[0]), model.sigma_max, rtol=1e-5, atol=0)
    torch.testing.assert_close(float(levels[-1]), model.sigma_min, rtol=1e-5, atol=0)


def test_normal_ends_like_sgm_uniform_on_a_model_whose_smallest_level_is_zero():
    """As ComfyUI's ``normal_scheduler``: a smallest level within 1e-5 of 0 is where the run ends,
    so it is dropped and the sampler's final 0 takes its place."""
    near_zero = FakeFormulation(sigma_min=1e-6, sigma_max=1.0)
    normal, sgm = (sfumato.build_sigma_schedule(name).sigmas(near_zero, 8) for name in ("normal", "sgm-uniform"))
    assert torch.equal(normal, sgm) and float(normal[-1]) > 10 * near_zero.sigma_min
    usual = sfumato.build_sigma_schedule("normal").sigmas(FORMULATIONS["fake"], 8)
    assert float(usual[-1]) == pytest.approx(FORMULATIONS["fake"].sigma_min, rel=1e-6)


def test_noise_schedule_range_is_its_table_ends():
    schedule = stable_diffusion()
    assert schedule.sigma_min == float(schedule.sigmas[0]) and schedule.sigma_max == float(schedule.sigmas[-1])
    assert round(schedule.sigma_max, 4) == 14.6146 and round(schedule.sigma_min, 4) == 0.0292


@pytest.mark.parametrize(
    "spec, steps, needles",
    [
        ("simple", 1001, ["at most 1000 steps", "1001"]),
        ("ddim-uniform", 1000, ["at most 999 steps", "1000"]),
        ({"type": "linear-quadratic", "linear_steps": 8}, 8, ["linear_steps = 8", "fewer than 8"]),
        ({"type": "beta", "domain": "timestep"}, 900, ["distinct training timesteps", "domain = 'sigma'"]),
    ],
    ids=["simple", "ddim-uniform", "linear-quadratic", "beta-timestep"],
)
def test_impossible_step_counts_are_spec_errors_naming_the_field(spec, steps, needles):
    schedule = sfumato.build_sigma_schedule(spec)
    with pytest.raises(sfumato.SpecError) as raised:
        schedule.sigmas(stable_diffusion(), steps)
    message = str(raised.value)
    assert message.startswith(f"[scheduler] sigmas = {schedule.type_name()!r}: ")
    for needle in needles:
        assert needle in message
