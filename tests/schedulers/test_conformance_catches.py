"""The conformance kit's Gaussian check fails samplers that pass every other check but are wrong:
a step coefficient off by a few percent, or a first-order method claiming second order."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

import sfumato
from sfumato.testing import SchedulerConformance


class SlightlyWrongEuler(sfumato.Scheduler):
    """Euler on Karras levels with the step 3% too long (the kind of slip a port makes)."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.wrong-euler"] = "test.wrong-euler"
        steps: int = 10

    factor = 1.03

    def plan(self, schedule, steps=None, strength=1.0):
        n = steps or self.spec.steps
        levels = torch.from_numpy(sfumato.spacing.karras_sigmas(schedule.sigma_min, schedule.sigma_max, n)).float()
        sigmas = torch.cat([levels, levels.new_zeros(1)])
        alpha = schedule.alpha(sigmas[0])
        return sfumato.SamplingPlan(schedule.timestep_at(levels), sigmas, float((alpha**2 + sigmas[0] ** 2).sqrt()),
                                    schedule)

    def noised(self, x0, noise, plan, i):
        return plan.schedule.noised_native(x0, noise, plan.sigmas[i])

    def step(self, model, x, plan, i, carry=None, noise=None):
        schedule, sigma, sigma_next = plan.schedule, plan.sigmas[i], plan.sigmas[i + 1]
        prediction = model(x / (schedule.alpha(sigma) ** 2 + sigma**2).sqrt(), plan.timesteps[i].expand(x.shape[0]))
        x = x + schedule.derivative(prediction) * (sigma_next - sigma) * self.factor
        return sfumato.StepResult(x, prediction.x0, {})


class RightEuler(SlightlyWrongEuler):
    factor = 1.0


class Kit(SchedulerConformance):
    spec = {"type": "test.wrong-euler"}


def check(cls: type[sfumato.Scheduler], order: int | None = None) -> None:
    kit = type("Kit", (Kit,), {"component_class": cls, "order": order})()
    for table in range(3):
        kit.test_converges_to_the_exact_solution_on_gaussian_data(table)


def test_the_correct_method_passes():
    check(RightEuler)


def test_a_three_percent_longer_step_fails():
    with pytest.raises(AssertionError, match="do not shrink"):
        check(SlightlyWrongEuler)


def test_a_first_order_method_claiming_second_order_fails():
    with pytest.raises(AssertionError, match="at order 2"):
        check(RightEuler, order=2)
