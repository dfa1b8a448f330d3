"""The example plugin's own tests, built on sfumato.testing."""

from __future__ import annotations

import torch

import sfumato
import sfumato_example
from sfumato.testing import GuidanceConformance, analytic_predictor, fresh_registry
from sfumato_example.apg import AdaptiveProjectedGuidance


class TestAPGConformance(GuidanceConformance):
    component_class = AdaptiveProjectedGuidance
    spec = {"type": "example.apg", "scale": 5.0}
    neutral = {"scale": 1.0}


def test_registers_through_a_fresh_registry():
    with fresh_registry(sfumato_example) as registry:
        assert registry.types("guidance") == ["example.apg"]
        assert isinstance(sfumato.build("guidance", {"type": "example.apg"}), AdaptiveProjectedGuidance)


def test_without_threshold_and_eta_one_it_equals_cfg_on_x0():
    schedule = sfumato.NoiseSchedule()
    base = analytic_predictor(schedule)
    apg = AdaptiveProjectedGuidance.from_spec({"scale": 4.0, "eta": 1.0, "norm_threshold": 0.0})
    guided = apg.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={}))
    x = torch.randn(2, 3, 4, 4)
    t = torch.full((2,), 300.0)
    cond = sfumato.Conditioning(tokens=torch.randn(2, 2, 3), negative=sfumato.Conditioning(tokens=torch.zeros(2, 2, 3)))
    uncond, positive = base(x, t, cond.negative), base(x, t, cond)
    torch.testing.assert_close(guided(x, t, cond).x0, uncond.lerp(positive, 4.0).x0, atol=1e-5, rtol=1e-5)


def test_norm_threshold_caps_the_update():
    schedule = sfumato.NoiseSchedule()
    base = analytic_predictor(schedule)
    x, t = torch.randn(1, 3, 4, 4), torch.full((1,), 300.0)
    cond = sfumato.Conditioning(tokens=torch.full((1, 2, 3), 2.0), negative=sfumato.Conditioning(tokens=torch.zeros(1, 2, 3)))
    capped = AdaptiveProjectedGuidance.from_spec({"scale": 2.0, "eta": 1.0, "norm_threshold": 0.01})
    out = capped.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={}))(x, t, cond)
    assert (out.x0 - base(x, t, cond).x0).norm() <= 0.01 + 1e-5
