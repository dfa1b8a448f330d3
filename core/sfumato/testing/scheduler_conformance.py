"""The conformance suite for schedulers: subclass it in a ``Test*`` class and set ``spec``.

::

    from sfumato.testing import SchedulerConformance
    import acme_samplers

    class TestKarrasEuler(SchedulerConformance):
        spec = {"type": "acme.karras-euler", "steps": 8}
        plugin = acme_samplers          # optional: load it into a fresh registry

The suite checks the contract in ``sfumato.Scheduler``: the Spec validates and round-trips, plans
have the documented shapes, a full run with an analytic model is finite, runs are deterministic
and leave no state behind, ``step`` compiles with ``torch.compile(fullgraph=True)`` (no host
synchronisation) and matches eager, and ``stochastic`` / ``model_calls_per_step`` tell the truth.

It also checks that the sampler is *correct*, on every registered formulation it is given
(``formulations``: VP, flow matching, EDM): for Gaussian data ``x0 ~ N(mu, s^2)`` the exact
denoiser and the exact probability-flow solution are known in closed form (the ODE keeps each
sample's standardised value ``(x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a)``), so a deterministic
sampler's error must shrink at its declared ``order`` as the steps double, and a stochastic one
must reach the data's mean and approach its spread.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from ..component import Component
from ..conditioning import Conditioning
from ..formulation import Formulation
from ..interfaces import Model, SamplingPlan, Scheduler
from ..noise_schedule import DiffusionSpec, NoiseSchedule
from ..prediction import Prediction
from ..registry import Registry, Source, get_registry
from ..sampling import run_sampler
from .conformance import ComponentConformance, analytic_predictor


#: The Gaussian data of the correctness check: x0 ~ N(GAUSS_MEAN, GAUSS_STD^2), elementwise; 6
#: standard deviations stay inside [-1, 1], so x0 clipping (thresholding) leaves the method exact.
GAUSS_MEAN, GAUSS_STD = 0.3, 0.1


@functools.lru_cache(maxsize=1)
def _default_registry() -> Registry:
    """A registry with every installed plugin, for formulations a test registry lacks."""
    return Registry(local=None)


class SchedulerConformance(ComponentConformance):
    """:attr spec: the scheduler's spec dict (with ``type``).
    :attr plugin: a plugin module to load into a fresh registry (as ``plugin_source``) instead of
        looking the type up in the process-wide registry; ``component_class`` skips registries.
    :attr diffusion: the ``[diffusion]`` table of the test model.
    :attr steps: steps of the test runs. :attr compile_backend: the ``torch.compile`` backend
        (``fullgraph=True`` fails on any graph break whatever the backend; "inductor" also
        generates code, which takes much longer on CPU).
    """

    kind = "scheduler"
    plugin: ClassVar[ModuleType | None] = None
    plugin_source: ClassVar[Source] = "local"
    diffusion: ClassVar[dict[str, Any]] = {"betas": "scaled_linear", "prediction": "epsilon"}
    steps: ClassVar[int] = 5
    sample_shape: ClassVar[tuple[int, ...]] = (2, 3, 8, 8)
    compile_backend: ClassVar[str] = "aot_eager"
    #: ``[diffusion]`` tables the correctness checks run on; types the registry lacks are skipped.
    formulations: ClassVar[tuple[dict[str, Any], ...]] = (
        {"type": "vp"}, {"type": "flow"}, {"type": "edm"},
    )
    #: The order the Gaussian check expects (default: the scheduler's ``order``).
    order: ClassVar[int | None] = None
    #: Step counts of the convergence check (each doubles the last) and the error below which a
    #: sampler counts as converged whatever its rate (float32 rounding and the final denoising
    #: step from the plan's last level bound what a ratio can show).
    convergence_steps: ClassVar[tuple[int, ...]] = (16, 32, 64)
    convergence_tolerance: ClassVar[float] = 6e-3

    def component_cls(self) -> type[Component]:
        if self.plugin is None:
            return super().component_cls()
        registry = Registry(first_party=False, entry_points=False, local=None)
        name = self.plugin.__name__.split(".")[-1]
        info = registry.add_plugin(name, self.plugin, self.plugin_source)
        if info is not None and info.status == "failed":
            raise AssertionError(f"plugin {name} failed to load: {info.error}")
        return registry.get(self.kind, self.spec["type"])

    # -- helpers ------------------------------------------------------------------------------

    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(DiffusionSpec(**self.diffusion))

    def model(self, schedule: NoiseSchedule, calls: list[int] | None = None) -> Model:
        """The analytic predictor with empty conditioning; appends to ``calls`` on every call."""
        predictor, cond = analytic_predictor(schedule), Conditioning()

        def model(x: Tensor, t: Tensor):
            if calls is not None:
                calls.append(1)
            return predictor(x, t, cond)

        return model

    def start(self, plan: SamplingPlan) -> Tensor:
        noise = torch.randn(self.sample_shape, generator=torch.Generator().manual_seed(0))
        return noise * plan.init_noise_sigma

    def run(self, scheduler: Scheduler, schedule: NoiseSchedule, steps: int) -> Tensor:
        plan = scheduler.plan(schedule, steps)
        generator = torch.Generator().manual_seed(1)
        return run_sampler(self.model(schedule), scheduler, plan, self.start(plan), generator=generator, progress=False)

    def noise(self, seed: int, scheduler: Scheduler) -> Tensor:
        """One step's noise for ``scheduler``: shaped like x, or ``[noise_draws, *x.shape]``."""
        draws = scheduler.noise_draws
        shape = self.sample_shape if draws == 1 else (draws, *self.sample_shape)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    def formulation(self, table: dict[str, Any]) -> Formulation:
        """The formulation of a ``[diffusion]`` table from the process-wide registry (the default
        one when that lacks the type); skips the test when no plugin provides it."""
        for registry in (get_registry(), _default_registry()):
            if table["type"] in registry.components["formulation"]:
                return registry.build("formulation", table)
        pytest.skip(f"no formulation {table['type']!r} is registered")

    def gaussian_run(self, scheduler: Scheduler, formulation: Formulation, steps: int,
                     shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Sample Gaussian data with its exact denoiser: ``(result, exact)``, ``exact`` being the
        exact probability-flow solution to the plan's last level followed by the same final
        denoising (``x0 = D(x)`` there) the plan's last step makes."""
        plan = scheduler.plan(formulation, steps)
        calls: list[tuple[Tensor, Tensor]] = []

        def model(x_t: Tensor, t: Tensor) -> Prediction:
            a = formulation.alpha_bar(t).reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.dtype)
            spread = (a * GAUSS_STD**2 + 1 - a).sqrt()  # the std of x_t
            calls.append(((x_t - a.sqrt() * GAUSS_MEAN) / spread, a))
            x0 = GAUSS_MEAN + a.sqrt() * GAUSS_STD**2 / spread**2 * (x_t - a.sqrt() * GAUSS_MEAN)
            return Prediction.from_x0(x0, x_t, a)

        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * plan.init_noise_sigma
        result = run_sampler(model, scheduler, plan, x, generator=torch.Generator().manual_seed(1), progress=False)
        (z, _), (_, a) = calls[0], calls[-1]
        exact = GAUSS_MEAN + a.sqrt() * GAUSS_STD**2 * z / (a * GAUSS_STD**2 + 1 - a).sqrt()
        return result, exact

    # -- the contract -------------------------------------------------------------------------

    def test_spec_defaults_validate_and_round_trip(self):
        spec_cls = self.component_cls().Spec
        spec = spec_cls.model_validate({"type": self.spec["type"]})
        assert spec_cls.model_validate(spec.model_dump()) == spec

    def test_plan_shapes_and_order(self):
        schedule = self.schedule()
        plan = self.build().plan(schedule, self.steps)
        n = self.steps
        assert plan.timesteps.shape == (n,) and plan.timesteps.is_floating_point()
        assert plan.sigmas.shape == (n + 1,) and plan.sigmas.is_floating_point()
        assert len(plan) == n and plan.schedule is schedule
        assert (plan.timesteps.diff() <= 0).all(), f"timesteps must not increase: {plan.timesteps}"
        assert (plan.sigmas.diff() < 0).all(), f"noise must decrease at every step: {plan.sigmas}"
        assert plan.timesteps.min() >= 0 and plan.timesteps.max() <= schedule.num_timesteps - 1
        assert isinstance(plan.init_noise_sigma, float) and plan.init_noise_sigma > 0
        for name, values in (plan.extra or {}).items():
            assert values.shape[0] in (n, n + 1), f"plan.extra[{name!r}] is not per step: {tuple(values.shape)}"

    def test_strength_keeps_the_end_of_the_trajectory(self):
        scheduler, schedule = self.build(), self.schedule()
        full, partial = scheduler.plan(schedule, 10), scheduler.plan(schedule, 10, strength=0.5)
        assert len(partial) == 5
        assert torch.equal(partial.sigmas, full.sigmas[-6:])
        assert torch.equal(partial.timesteps, full.timesteps[-5:])

    def test_full_run_is_finite_and_shaped(self):
        x = self.run(self.build(), self.schedule(), self.steps)
        assert x.shape == self.sample_shape and x.dtype == torch.float32
        assert torch.isfinite(x).all()

    def test_deterministic_and_stateless(self):
        scheduler, schedule = self.build(), self.schedule()
        first = self.run(scheduler, schedule, self.steps)
        self.run(scheduler, schedule, self.steps + 2)  # a different run in between
        assert torch.equal(first, self.run(scheduler, schedule, self.steps))
        assert torch.equal(first, self.run(self.build(), schedule, self.steps))

    def test_noised_matches_the_plan_sigmas(self):
        scheduler, schedule = self.build(), self.schedule()
        plan = scheduler.plan(schedule, self.steps)
        ones = torch.ones(self.sample_shape)
        for i in (0, len(plan) - 1):
            signal = scheduler.noised(ones, torch.zeros_like(ones), plan, i)
            noise = scheduler.noised(torch.zeros_like(ones), ones, plan, i)
            torch.testing.assert_close(noise / signal, plan.sigmas[i].expand_as(ones), rtol=1e-5, atol=1e-6)

    def test_step_compiles_without_graph_breaks(self):
        torch._dynamo.reset()
        scheduler, schedule = self.build(), self.schedule()
        plan = scheduler.plan(schedule, self.steps)
        model = self.model(schedule)
        compiled = torch.compile(scheduler.step, fullgraph=True, backend=self.compile_backend)
        x, carry = self.start(plan), {}
        for i in range(len(plan)):
            noise = self.noise(10 + i, scheduler) if scheduler.stochastic else None
            eager = scheduler.step(model, x, plan, i, carry, noise)
            graph = compiled(model, x, plan, i, carry, noise)
            torch.testing.assert_close(graph.x, eager.x, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(graph.denoised, eager.denoised, rtol=1e-5, atol=1e-5)
            x, carry = eager.x, eager.carry

    def test_stochastic_flag_is_truthful(self):
        scheduler, schedule = self.build(), self.schedule()
        plan, model = scheduler.plan(schedule, self.steps), self.model(schedule)
        x = self.start(plan)
        first = scheduler.step(model, x, plan, 0, {}, self.noise(1, scheduler)).x
        assert torch.equal(first, scheduler.step(model, x, plan, 0, {}, self.noise(1, scheduler)).x)
        other = scheduler.step(model, x, plan, 0, {}, self.noise(2, scheduler)).x
        if scheduler.stochastic:
            assert not torch.equal(first, other), "a stochastic scheduler must use the noise it is given"
        else:
            assert torch.equal(first, other), "a deterministic scheduler must ignore `noise`"
            assert torch.equal(first, scheduler.step(model, x, plan, 0, {}, None).x)

    @pytest.mark.parametrize("table", range(3), ids=("formulation0", "formulation1", "formulation2"))
    def test_runs_on_every_formulation(self, table):
        if table >= len(self.formulations):
            pytest.skip("fewer formulations configured")
        formulation, scheduler = self.formulation(self.formulations[table]), self.build()
        plan = scheduler.plan(formulation, self.steps)
        assert plan.schedule is formulation and (plan.sigmas.diff() < 0).all()
        x = self.run(scheduler, formulation, self.steps)
        assert x.shape == self.sample_shape and torch.isfinite(x).all()

    @pytest.mark.parametrize("table", range(3), ids=("formulation0", "formulation1", "formulation2"))
    def test_converges_to_the_exact_solution_on_gaussian_data(self, table):
        if table >= len(self.formulations):
            pytest.skip("fewer formulations configured")
        formulation, scheduler = self.formulation(self.formulations[table]), self.build()
        name = f"{self.spec['type']} on {self.formulations[table]}"
        if scheduler.stochastic:  # weak convergence: the data's mean, and its spread approached
            misses = []
            for steps in (self.convergence_steps[0], self.convergence_steps[-1]):
                result, exact = self.gaussian_run(scheduler, formulation, steps, (64, 4, 16, 16))
                assert abs(result.mean().item() - GAUSS_MEAN) < 0.2 * GAUSS_STD, (
                    f"{name}: mean {result.mean():.4f} at {steps} steps, data {GAUSS_MEAN}")
                misses.append(abs(result.std().item() - exact.std().item()))  # exact: the final denoising's spread
            assert misses[-1] < 0.7 * misses[0] or misses[-1] < 0.05 * GAUSS_STD, (
                f"{name}: the spread does not approach the exact one as steps grow: misses {misses}")
            return
        order = self.order if self.order is not None else scheduler.order
        errors = [(lambda r: (r[0] - r[1]).abs().max().item())(self.gaussian_run(scheduler, formulation, n, (4, 3, 8, 8)))
                  for n in self.convergence_steps]
        expected = 2.0 ** -order * 1.6  # the error ratio per doubling, with slack for the pre-asymptotic range
        assert errors[-1] <= max(errors[-2] * expected, self.convergence_tolerance), (
            f"{name}: errors {['%.2e' % e for e in errors]} at {self.convergence_steps} steps do not shrink "
            f"at order {order} (by {1 / expected:.2f}x per doubling)")
        assert errors[-1] <= errors[0] * 0.7 or errors[-1] <= self.convergence_tolerance, (
            f"{name}: errors {['%.2e' % e for e in errors]} do not shrink with more steps")

    def test_model_calls_per_step(self):
        scheduler, schedule = self.build(), self.schedule()
        plan = scheduler.plan(schedule, self.steps)
        x, carry, counts = self.start(plan), {}, []
        for i in range(len(plan)):
            calls: list[int] = []
            noise = self.noise(i, scheduler) if scheduler.stochastic else None
            x, _, carry = scheduler.step(self.model(schedule, calls), x, plan, i, carry, noise)
            counts.append(len(calls))
        assert max(counts) == scheduler.model_calls_per_step, f"model calls per step: {counts}"
        assert counts[0] == scheduler.model_calls_per_step
