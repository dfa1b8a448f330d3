"""Every sigma-space sampler runs on every sigma schedule: its plan visits exactly the schedule's
levels (then 0), gives the model the timestep of each level, and a run is finite. A schedule that
breaks the contract is named before sampling starts."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_schedulers
import sfumato_sigmas
from sfumato.testing import fresh_registry
from sfumato.testing.conformance import analytic_predictor
from sfumato_test_doubles import spec_dict
from sigmas import acme_sigmas
from sigmas.formulations import stable_diffusion

SAMPLERS = ("euler", "euler-ancestral", "heun", "dpmpp-2m")
SCHEDULE = stable_diffusion()


def run(scheduler: sfumato.Scheduler, plan: sfumato.SamplingPlan) -> torch.Tensor:
    model = analytic_predictor(SCHEDULE)
    cond = sfumato.Conditioning()
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * plan.init_noise_sigma
    return sfumato.run_sampler(lambda x, t: model(x, t, cond), scheduler, plan, x,
                               generator=torch.Generator().manual_seed(1), progress=False)


@pytest.mark.parametrize("name", list(sfumato_sigmas.SIGMA_SCHEDULES_BY_TYPE))
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_visits_the_schedule_levels(sampler, name):
    levels = sfumato.build_sigma_schedule(name).sigmas(SCHEDULE, 6)
    scheduler = sfumato_schedulers.SCHEDULERS_BY_TYPE[sampler].from_spec({"sigmas": name})
    plan = scheduler.plan(SCHEDULE, 6)
    assert torch.equal(plan.sigmas, torch.cat([levels, torch.zeros(1)]))
    assert torch.equal(plan.timesteps, SCHEDULE.timestep_at(levels))
    assert torch.isfinite(run(scheduler, plan)).all()
    assert torch.equal(scheduler.plan(SCHEDULE, 6, strength=0.5).sigmas, plan.sigmas[3:])


def test_a_table_with_fields_reaches_the_schedule():
    scheduler = sfumato_schedulers.SCHEDULERS_BY_TYPE["dpmpp-2m"].from_spec(
        {"sigmas": {"type": "karras", "rho": 3.0}})
    expected = torch.from_numpy(sfumato.spacing.karras_sigmas(SCHEDULE.sigma_min, SCHEDULE.sigma_max, 8, 3.0)).float()
    assert torch.equal(scheduler.plan(SCHEDULE, 8).sigmas[:-1], expected)


def test_a_faulty_third_party_schedule_is_named_before_sampling():
    with fresh_registry(acme_sigmas, first_party=True):
        scheduler = sfumato.build("scheduler", {"type": "euler", "sigmas": "acme_sigmas.rising"})
        expected = r"\[scheduler\] sigmas = 'acme_sigmas.rising': gave levels that do not decrease"
        with pytest.raises(sfumato.SpecError, match=expected):
            scheduler.plan(SCHEDULE, 5)


def test_a_third_party_schedule_drives_a_first_party_sampler_end_to_end():
    """Registered by a plugin, selected by a table in the spec, recorded in the lock."""
    import sfumato_test_doubles

    with fresh_registry(acme_sigmas, sfumato_test_doubles, first_party=True):
        sigmas = {"type": "acme_sigmas.linear", "floor": 0.1}
        spec = spec_dict(scheduler={"type": "euler", "steps": 4, "sigmas": sigmas})
        torch.manual_seed(0)
        result = sfumato.load_pipeline(spec)("x", seed=0)
    assert torch.isfinite(result.latents).all()
    assert result.lock["spec"]["scheduler"]["sigmas"] == {"type": "acme_sigmas.linear", "floor": 0.1}
