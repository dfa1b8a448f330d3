"""``autoguidance`` (Karras et al. 2024): the prediction guided away from a weaker denoiser's,
``D_weak + w (D - D_weak)``, equal to diffusers' ``AutoGuidance`` formula, composed after ``cfg``,
and its weak model's weights recorded in the lock."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_guidance
import sfumato_tasks
import sfumato_test_doubles
from sfumato.testing import fresh_registry
from sfumato_test_doubles import LinearDenoiser, spec_dict

diffusers = pytest.importorskip("diffusers")


@pytest.fixture
def weights(tmp_path):
    """``(strong, weak)`` weights files of the linear test denoiser."""
    paths = []
    for name, seed in (("strong", 1), ("weak", 2)):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"{name}.safetensors")
        sfumato.save_weights(LinearDenoiser.from_spec({}).state_dict(), paths[-1])
    return paths


@pytest.fixture
def registry():
    with fresh_registry(sfumato_test_doubles) as registry:
        registry.add_plugin("tasks", sfumato_tasks, "registry")
        registry.add_plugin("guidance", sfumato_guidance, "registry")
        yield registry


def pipeline(strong, guidance):
    torch.manual_seed(0)  # the same untrained text encoder in every pipeline
    return sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 8, "width": 8},
                                           denoiser={"type": "test.linear", "weights": str(strong)}, guidance=guidance))


def test_equals_diffusers_autoguidance_on_the_weak_prediction(registry, weights):
    strong, weak = weights
    pipe = pipeline(strong, [{"type": "autoguidance", "scale": 2.5, "weights": str(weak)}])
    cond = sfumato.blocks.condition(pipe, ["a red circle"], None, [], 2)
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 400.0)
    ours = sfumato.blocks.guided_model(pipe, cond, None, None)(x, t)
    d0 = sfumato.bind_predictor(pipe.component("denoiser"), pipe.schedule)(x, t, cond)
    d1 = sfumato.bind_predictor(LinearDenoiser.from_spec({"weights": str(weak)}), pipe.schedule)(x, t, cond)
    assert (d0.eps - d1.eps).abs().mean() > 0.1  # the two models differ
    guider = diffusers.guiders.AutoGuidance(guidance_scale=2.5, auto_guidance_layers=[0], dropout=1.0)
    reference = guider.forward(pred_cond=d0.eps, pred_uncond=d1.eps).pred
    torch.testing.assert_close(ours.eps, reference, rtol=1e-5, atol=1e-5)


def test_scale_one_is_unguided_and_cfg_then_autoguidance_composes(registry, weights):
    strong, weak = weights
    plain = pipeline(strong, [])("x", seed=3, steps=3, progress=False)
    one = pipeline(strong, [{"type": "autoguidance", "scale": 1.0, "weights": str(weak)}])("x", seed=3, steps=3,
                                                                                            progress=False)
    torch.testing.assert_close(one.decoded, plain.decoded)
    both = pipeline(strong, [{"type": "cfg", "scale": 3.0}, {"type": "autoguidance", "scale": 2.0, "weights": str(weak)}])
    cond = sfumato.blocks.condition(both, ["x"], None, [], 1)
    x, t = torch.randn(1, 3, 8, 8), torch.full((1,), 600.0)
    cfg_only = pipeline(strong, [{"type": "cfg", "scale": 3.0}])
    inner = sfumato.blocks.guided_model(cfg_only, cond, None, None)(x, t)
    d1 = sfumato.bind_predictor(LinearDenoiser.from_spec({"weights": str(weak)}), both.schedule)(x, t, cond)
    torch.testing.assert_close(sfumato.blocks.guided_model(both, cond, None, None)(x, t).x0, d1.lerp(inner, 2.0).x0)
    result = both("x", seed=3, steps=3, progress=False)
    assert any(key.startswith("guidance") and key.endswith("weights") for key in result.lock["weights"])


@pytest.mark.parametrize("table, needle", [
    ({"type": "autoguidance"}, "set weights"),
    ({"type": "autoguidance", "weights": "w.safetensors", "denoiser": {"type": "test.linear"}}, "not both"),
    ({"type": "autoguidance", "weights": "w.safetensors", "start": 0.8, "stop": 0.2}, "start 0.8 is after stop 0.2"),
])
def test_a_wrong_table_names_the_problem(registry, table, needle):
    with pytest.raises(sfumato.SpecError, match=needle):
        pipeline("x.safetensors", [table])
