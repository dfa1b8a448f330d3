"""One Brownian path per run: the same seed gives the same path whatever the queries, its
increments have the right variance and are independent over disjoint intervals, and a sampler
that asks for Brownian noise gets increments of one path (so a finer plan refines, not redraws)."""

from __future__ import annotations

from typing import Literal

import torch

import sfumato
from sfumato.brownian import BrownianPath, brownian_increments
from sfumato.sampling import sampler_noise


def test_the_path_does_not_depend_on_the_order_or_set_of_queries():
    a = BrownianPath(0.0, 10.0, (3,), seed=5)
    b = BrownianPath(0.0, 10.0, (3,), seed=5)
    first = a(7.3)
    for t in (1.0, 9.9, 0.2):
        b(t)
    assert torch.equal(first, b(7.3))
    assert not torch.equal(first, BrownianPath(0.0, 10.0, (3,), seed=6)(7.3))
    assert torch.equal(a(0.0), torch.zeros(3))


def test_increments_have_the_variance_of_their_interval_and_are_independent():
    path = BrownianPath(0.0, 4.0, (20000,), seed=1)
    w1, w3, w4 = path(1.0), path(3.0), path(4.0)
    assert abs((w3 - w1).var().item() - 2.0) < 0.06 and abs(w1.var().item() - 1.0) < 0.03
    assert abs(torch.corrcoef(torch.stack([w3 - w1, w4 - w3]))[0, 1].item()) < 0.03


def test_a_coarse_step_is_the_sum_of_the_fine_steps_inside_it():
    generator = torch.Generator().manual_seed(3)
    coarse = brownian_increments(torch.tensor([[8.0, 2.0]]), (5,), torch.Generator().manual_seed(3))
    fine = brownian_increments(torch.tensor([[8.0, 5.0, 2.0]]), (5,), generator)
    combined = (fine[0, 0] * 3**0.5 + fine[0, 1] * 3**0.5) / 6**0.5  # back to one unit-variance increment
    torch.testing.assert_close(coarse[0, 0], combined, rtol=1e-5, atol=1e-5)


class TwoDraws(sfumato.Scheduler):
    """Two draws per step; Brownian increments over (sigma, midpoint, sigma_next) when ``brownian``."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.two-draws"] = "test.two-draws"

    stochastic, noise_draws, brownian = True, 2, False

    def plan(self, schedule, steps=None, strength=1.0):
        sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0])
        return sfumato.SamplingPlan(schedule.timestep_at(sigmas[:-1]), sigmas, 4.0, schedule)

    def noise_levels(self, plan):
        if not self.brownian:
            return None
        mid = (plan.sigmas[:-1] * plan.sigmas[1:]).sqrt()  # (N,) a midpoint of each step
        return torch.stack([plan.sigmas[:-1], mid, plan.sigmas[1:]], dim=1)  # (N, 3)

    def step(self, model, x, plan, i, carry=None, noise=None):
        return sfumato.StepResult(x, x, {})


def test_run_sampler_gives_each_step_its_draws_and_brownian_increments_on_request():
    scheduler = TwoDraws.from_spec({})
    plan = scheduler.plan(sfumato.NoiseSchedule())
    independent = sampler_noise(scheduler, plan, (2, 3), torch.Generator().manual_seed(0), "cpu")
    assert independent.shape == (3, 2, 2, 3)
    scheduler.brownian = True
    brownian = sampler_noise(scheduler, plan, (2, 3), torch.Generator().manual_seed(0), "cpu")
    again = sampler_noise(scheduler, plan, (2, 3), torch.Generator().manual_seed(0), "cpu")
    assert brownian.shape == (3, 2, 2, 3) and torch.equal(brownian, again)
    assert not torch.equal(brownian, independent)


def test_many_queries_keep_one_descent_in_memory_and_any_order_gives_the_same_values():
    path, other = BrownianPath(0.0, 10.0, (3,), seed=5), BrownianPath(0.0, 10.0, (3,), seed=5)
    points = torch.rand(300, generator=torch.Generator().manual_seed(0)).mul(10).tolist()
    forward = [path(t) for t in points]
    backward = [other(t) for t in reversed(points)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert len(path._trail) <= path.depth + 1  # not one tensor per node ever drawn
