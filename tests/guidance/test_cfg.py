"""Classifier-free guidance: one batched forward, the lerp formula, rescale, the interval."""

from __future__ import annotations

import pytest
import torch

import sfumato
from guidance.toys import NULL_LABEL, SCHEDULERS, sample
from sfumato.testing import analytic_predictor


def labelled(labels: list[int]) -> sfumato.Conditioning:
    y = torch.tensor(labels)
    return sfumato.Conditioning(labels=y, negative=sfumato.Conditioning(labels=torch.full_like(y, NULL_LABEL)))


def text_cond(batch: int = 2) -> sfumato.Conditioning:
    g = torch.Generator().manual_seed(2)
    return sfumato.Conditioning(tokens=torch.randn(batch, 3, 4, generator=g),
                                negative=sfumato.Conditioning(tokens=torch.zeros(batch, 3, 4)))


def wrap(spec: dict, schedule: sfumato.NoiseSchedule, predictor=None) -> sfumato.Predictor:
    guidance = sfumato.build("guidance", {"type": "cfg", **spec})
    return guidance.wrap(predictor or analytic_predictor(schedule), sfumato.GuidanceContext(schedule=schedule, components={}))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_one_batched_forward_per_model_call(scheduler, mixture, schedule):
    model_calls = []

    class Count:  # a transparent outermost wrapper: one entry per call the scheduler makes
        def wrap(self, predictor, context):
            def counted(x, t, cond):
                model_calls.append(x.shape[0])
                return predictor(x, t, cond)
            return counted

    cfg = sfumato.build("guidance", {"type": "cfg", "scale": 3.0})
    sample(mixture, schedule, scheduler, [cfg, Count()], labelled([0, 1, 1]), (3, 3, 8, 8), steps=4)
    assert len(mixture.calls) == len(model_calls) >= 4
    assert mixture.calls == [6] * len(model_calls)  # [negative, positive] of 3 samples, once per call
    if scheduler == "heun":
        assert len(model_calls) > 4  # the corrector's second call is guided too


def test_scale_one_is_the_conditional_pass_alone(mixture, schedule):
    out = sample(mixture, schedule, "ddim", [sfumato.build("guidance", {"type": "cfg", "scale": 1.0})],
                 labelled([0, 1]), (2, 3, 8, 8), steps=3)
    assert mixture.calls == [2, 2, 2]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("scale", [0.0, 2.5, 7.5])
def test_guided_prediction_is_uncond_plus_scale_times_difference(scale, schedule):
    base = analytic_predictor(schedule)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([300.0, 700.0]), text_cond()
    uncond, positive = base(x, t, cond.negative), base(x, t, cond)
    guided = wrap({"scale": scale}, schedule)(x, t, cond)
    torch.testing.assert_close(guided.eps, uncond.eps + scale * (positive.eps - uncond.eps), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided.x0, uncond.x0 + scale * (positive.x0 - uncond.x0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "sample"])
def test_rescale_matches_diffusers_on_the_raw_output(prediction):
    from diffusers.guiders.guider_utils import rescale_noise_cfg

    schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(prediction=prediction))
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, 1, 1, generator=g)

    def network(x, t, cond):  # a raw output in the schedule's parameterisation
        return torch.nn.functional.conv2d(x, weight) * (1 + cond.tokens.mean(dim=(1, 2)).reshape(-1, 1, 1, 1))

    base = sfumato.bind_predictor(network, schedule)
    x, t, cond = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([200.0, 800.0]), text_cond()
    raw_uncond, raw_cond = network(x, t, cond.negative), network(x, t, cond)
    expected_raw = rescale_noise_cfg(raw_uncond + 6.0 * (raw_cond - raw_uncond), raw_cond, guidance_rescale=0.7)
    expected = schedule.to_prediction(expected_raw, x, t)
    guided = wrap({"scale": 6.0, "rescale": 0.7}, schedule, base)(x, t, cond)
    torch.testing.assert_close(guided.x0, expected.x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(guided.eps, expected.eps, atol=1e-4, rtol=1e-4)
    plain = wrap({"scale": 6.0}, schedule, base)(x, t, cond)
    assert (guided.eps - plain.eps).abs().max() > 1e-2  # the rescale did something


def test_interval_guides_only_inside_and_costs_one_pass_outside(mixture, schedule):
    # Trajectory position 1 - t / 999: t = 900 -> 0.0991, t = 500 -> 0.4995, t = 100 -> 0.8999.
    predictor = wrap({"scale": 4.0, "interval": [0.3, 0.7]}, schedule, sfumato.bind_predictor(mixture, schedule))
    full = wrap({"scale": 4.0}, schedule, sfumato.bind_predictor(mixture, schedule))
    plain = sfumato.bind_predictor(mixture, schedule)
    x, cond = torch.randn(3, 3, 8, 8), labelled([0, 1, 1])
    outside = torch.tensor([900.0, 900.0, 100.0])
    mixture.calls.clear()
    out = predictor(x, outside, cond)
    assert mixture.calls == [3]
    assert torch.equal(out.eps, plain(x, outside, cond).eps)
    mixed = torch.tensor([900.0, 500.0, 100.0])
    out = predictor(x, mixed, cond)
    guided, conditional = full(x, mixed, cond), plain(x, mixed, cond)
    torch.testing.assert_close(out.eps[1], guided.eps[1])
    torch.testing.assert_close(out.eps[[0, 2]], conditional.eps[[0, 2]])
    assert (guided.eps[1] - conditional.eps[1]).abs().max() > 1e-3


def test_interval_bounds_are_validated():
    with pytest.raises(ValueError, match=r"0 <= start <= end <= 1, got \[0.8, 0.2\]"):
        sfumato.build("guidance", {"type": "cfg", "interval": [0.8, 0.2]})


def test_missing_negative_is_an_error_that_says_what_to_do(schedule):
    guided = wrap({"scale": 3.0}, schedule)
    with pytest.raises(ValueError, match="cfg needs a negative"):
        guided(torch.randn(1, 4, 8, 8), torch.tensor([10.0]), sfumato.Conditioning(tokens=torch.zeros(1, 3, 4)))
