"""Step-aware guidance: every model call sees its step (``GuidanceContext.step``: index, count) and
the run's plan, with every scheduler (Heun and DPM-2 call the model twice per step); ``wrap`` is
called once per run, so state in its closure lives for that run and a pipeline called twice gives
identical output; ``index_tensor`` keeps a compiled scheduler step free of per-step recompiles."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato.generation
from guidance.test_pipeline import class_pipeline
from guidance.toys import NULL_LABEL, sample
from sfumato.testing import analytic_predictor

SCHEDULERS = ("ddpm", "ddim", "euler", "euler-ancestral", "heun", "dpmpp-2m", "dpm2-ancestral", "lms")
SHAPE = (2, 3, 8, 8)


class StepProbe:
    """Records ``(index, count, t, plan)`` of every model call it wraps, and the runs it was wrapped
    for (a test probe: its records are the test's, so they live on the probe)."""

    def __init__(self):
        self.calls: list[tuple[int, int, float, sfumato.SamplingPlan | None]] = []
        self.runs = 0

    def wrap(self, predictor, context):
        self.runs += 1

        def recorded(x, t, cond):
            self.calls.append((context.step.index, context.step.count, float(t[0]), context.plan))
            return predictor(x, t, cond)

        return recorded


class Momentum(sfumato.Guidance):
    """A stateful guidance written as documented: the previous call's x0 lives in the closure, so
    each run starts without one. ``x0 <- x0 + weight * (x0 - previous x0)``."""

    def __init__(self, weight: float = 0.5):
        self.weight = weight

    def wrap(self, predictor, context):
        previous: list[torch.Tensor] = []

        def guided(x, t, cond):
            prediction = predictor(x, t, cond)
            x0 = prediction.x0 + self.weight * (prediction.x0 - previous[-1]) if previous else prediction.x0
            previous[:] = [prediction.x0]
            return sfumato.Prediction.from_x0(x0, x, prediction.alpha_bar)

        return guided


class MomentumOnSelf(Momentum):
    """The same method with its state kept on ``self``, as the docs say not to: a second run starts
    from the first run's last x0."""

    def wrap(self, predictor, context):
        self.previous: list[torch.Tensor] = getattr(self, "previous", [])

        def guided(x, t, cond):
            prediction = predictor(x, t, cond)
            x0 = prediction.x0 + self.weight * (prediction.x0 - self.previous[-1]) if self.previous else prediction.x0
            self.previous[:] = [prediction.x0]
            return sfumato.Prediction.from_x0(x0, x, prediction.alpha_bar)

        return guided


def labelled() -> sfumato.Conditioning:
    labels = torch.tensor([0, 1])
    return sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, NULL_LABEL)))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_model_call_sees_its_step_and_the_plan(scheduler, mixture, schedule):
    probe, steps = StepProbe(), 4
    sample(mixture, schedule, scheduler, [sfumato.build("guidance", {"type": "cfg", "scale": 2.0}), probe], labelled(),
           SHAPE, steps=steps)
    plan = probe.calls[0][3]
    assert plan is not None and len(plan) == steps
    indices = [index for index, _, _, _ in probe.calls]
    assert {count for _, count, _, _ in probe.calls} == {steps}
    assert sorted(set(indices)) == list(range(steps)) and indices == sorted(indices)
    calls_per_step = sfumato.build("scheduler", {"type": scheduler}).model_calls_per_step
    for i in range(steps):
        at_i = [t for index, _, t, _ in probe.calls if index == i]
        assert at_i[0] == pytest.approx(float(plan.timesteps[i]), abs=1e-3)  # the step's first call is at its start
        last = i == steps - 1  # Heun's and DPM-2's last step, to sigma 0, is one Euler call
        assert len(at_i) == (1 if last else calls_per_step)


def test_heuns_second_call_sees_the_step_it_corrects(mixture, schedule):
    probe = StepProbe()
    sample(mixture, schedule, "heun", [probe], labelled(), SHAPE, steps=3)
    plan = probe.calls[0][3]
    # step 0: predictor at boundary 0, corrector at boundary 1; step 1 likewise; the last step is one Euler call
    assert [(index, round(t, 3)) for index, _, t, _ in probe.calls] == [
        (0, round(float(plan.timesteps[0]), 3)), (0, round(float(plan.timesteps[1]), 3)),
        (1, round(float(plan.timesteps[1]), 3)), (1, round(float(plan.timesteps[2]), 3)),
        (2, round(float(plan.timesteps[2]), 3)),
    ]


def test_generate_wraps_once_per_run_with_the_plan_and_counts_each_chunk(monkeypatch):
    pipe = class_pipeline([{"type": "cfg", "scale": 2.0}])
    probe = StepProbe()
    pipe.guidance.append(probe)
    pipe(labels=[0, 1], height=8, width=8, steps=3, seed=1, progress=False)
    assert probe.runs == 1
    assert [(index, count) for index, count, _, _ in probe.calls] == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3)]  # heun
    torch.testing.assert_close(probe.calls[0][3].timesteps, pipe.scheduler.plan(pipe.schedule, 3).timesteps)
    monkeypatch.setattr(sfumato.generation, "CHUNK_PIXELS", 8 * 8)  # one sample per chunk: two runs
    probe.calls.clear()
    pipe(labels=[0, 1], height=8, width=8, steps=3, seed=1, progress=False)
    assert probe.runs == 3
    assert [index for index, _, _, _ in probe.calls] == [0, 0, 1, 1, 2] * 2


def test_state_in_the_closure_lives_for_one_run():
    pipe = class_pipeline([{"type": "cfg", "scale": 2.0}])
    kwargs = dict(labels=[0, 1], height=8, width=8, steps=3, seed=4, progress=False)
    plain = pipe(**kwargs).latents
    pipe.guidance.append(Momentum())
    first, second = pipe(**kwargs).latents, pipe(**kwargs).latents
    assert torch.equal(first, second)
    assert (first - plain).abs().max() > 1e-3  # the state changes the result
    pipe.guidance[-1] = MomentumOnSelf()
    first, second = pipe(**kwargs).latents, pipe(**kwargs).latents
    assert not torch.equal(first, second)  # what the docs warn against


class ZeroFirstSteps:
    """Zero-initialisation by step (CFG-Zero*'s first steps), written with ``index_tensor`` so a
    compiled scheduler step reads the step without a guard on its value."""

    def __init__(self, steps: int):
        self.steps = steps

    def wrap(self, predictor, context):
        def guided(x, t, cond):
            prediction = predictor(x, t, cond)
            early = context.step.index_tensor < self.steps
            return sfumato.Prediction(x0=torch.where(early, torch.zeros_like(prediction.x0), prediction.x0),
                                      eps=prediction.eps, alpha_bar=prediction.alpha_bar)
        return guided


class ZeroFirstStepsByInt(ZeroFirstSteps):
    """The same method deciding on the Python int ``index``: right for skipping work, but a compiled
    predictor then recompiles as the index changes (steps 0, 1, then once more where the decision
    flips, with the index symbolic from the second value on)."""

    def wrap(self, predictor, context):
        def guided(x, t, cond):
            prediction = predictor(x, t, cond)
            if context.step.index < self.steps:
                return sfumato.Prediction(x0=torch.zeros_like(prediction.x0), eps=prediction.eps,
                                          alpha_bar=prediction.alpha_bar)
            return prediction
        return guided


@pytest.mark.parametrize("method, graphs", [(ZeroFirstSteps, 1), (ZeroFirstStepsByInt, 3)])
def test_a_compiled_guided_model_reads_the_step_from_index_tensor_without_recompiling(method, graphs, schedule):
    scheduler = sfumato.build("scheduler", {"type": "euler"})
    plan = scheduler.plan(schedule, 5)
    context = sfumato.GuidanceContext(schedule=schedule, components={}, plan=plan, step=sfumato.SamplerStep.for_plan(plan))
    predictor = method(2).wrap(analytic_predictor(schedule), context)  # stateless: no guard of its own
    cond = sfumato.Conditioning()

    def model(x, t):
        return predictor(x, t.reshape(-1).expand(x.shape[0]), cond)

    compiled_graphs = []

    def backend(graph, inputs):
        compiled_graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x0_norms = []
    with torch.no_grad():
        for i in range(len(plan)):
            context.step.enter(i)
            x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i))
            t = plan.timesteps[i].expand(SHAPE[0])
            eager, graph = model(x, t), compiled(x, t)
            torch.testing.assert_close(graph.x0, eager.x0)
            x0_norms.append(float(eager.x0.abs().max()))
    assert x0_norms[0] == x0_norms[1] == 0.0 and x0_norms[2] > 0  # the step decides, at call time
    assert len(compiled_graphs) == graphs
