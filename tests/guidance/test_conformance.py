"""Every guidance type passes the shipped guidance conformance suite; the noise-aware classifier
passes the module suite (spec round trip, determinism, safetensors round trip, bfloat16)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import torch

import sfumato
from guidance.toys import TINY_CLIP
from sfumato.testing import GuidanceConformance, ModuleConformance


def _clip_towers() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "image_encoder": sfumato.build("encoder", {"type": "clip-image", "architecture": TINY_CLIP}).eval(),
        "text_encoder": sfumato.build("encoder", {"type": "clip-text", "architecture": TINY_CLIP}).eval(),
    }


class TestCFG(GuidanceConformance):
    spec = {"type": "cfg", "scale": 5.0}
    neutral = {"scale": 1.0}


class TestCFGRescaleInterval(GuidanceConformance):
    spec = {"type": "cfg", "scale": 5.0, "rescale": 0.7, "interval": [0.2, 0.9]}
    neutral = {"scale": 1.0}


class TestClassifierGuidance(GuidanceConformance):
    spec = {"type": "classifier", "scale": 3.0}

    def context(self, schedule, batch):
        torch.manual_seed(0)
        classifier = sfumato.build("classifier", {"type": "noise-classifier", "in_channels": 4, "num_classes": 3,
                                                  "channels": [8, 16]}).eval()
        return sfumato.GuidanceContext(schedule=schedule, components={"classifier": classifier},
                                       labels=torch.tensor([0, 2])[:batch])


class TestCLIPGuidancePixels(GuidanceConformance):
    spec = {"type": "clip", "scale": 100.0, "cutouts": 2}
    sample_shape = (3, 8, 8)

    def context(self, schedule, batch):
        return sfumato.GuidanceContext(schedule=schedule, components=_clip_towers(), prompts=["a red circle"] * batch,
                                       generator=torch.Generator().manual_seed(0))


class TestCLIPGuidanceLatents(GuidanceConformance):
    spec = {"type": "clip", "scale": 100.0, "cutouts": 2, "through_model": False}
    sample_shape = (4, 4, 4)

    def context(self, schedule, batch):
        torch.manual_seed(0)
        vae = sfumato.build("autoencoder", {"type": "vae-kl", "block_out_channels": [8, 8], "layers_per_block": 1,
                                            "norm_num_groups": 4}).eval()
        components = {**_clip_towers(), "autoencoder": vae}
        return sfumato.GuidanceContext(schedule=schedule, components=components, prompts=["a red circle"] * batch,
                                       generator=torch.Generator().manual_seed(0))


class TestNoiseClassifier(ModuleConformance):
    kind = "classifier"
    spec = {"type": "noise-classifier", "in_channels": 4, "num_classes": 3, "channels": [8, 16, 16]}

    def example_output(self, component):
        dtype = next(component.parameters()).dtype
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
        return component(x, torch.tensor([10.0, 500.5]))

    def test_logits_shape_and_batch_independence(self):
        classifier = self.build()
        x = torch.randn(3, 4, 8, 8)
        t = torch.tensor([0.0, 250.0, 999.0])
        with torch.no_grad():
            both = classifier(x, t)
            first = classifier(x[:1], t[:1])
        assert both.shape == (3, 3)
        torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)

    def test_timestep_changes_the_logits(self):
        classifier = self.build()
        x = torch.randn(1, 4, 8, 8)
        with torch.no_grad():
            assert not torch.allclose(classifier(x, torch.tensor([10.0])), classifier(x, torch.tensor([900.0])))

    def test_norm_groups_must_divide_channels(self):
        with pytest.raises(pydantic.ValidationError, match="norm_groups 8 must divide every width in channels, not \\[12\\]"):
            self.component_cls().Spec.model_validate({"type": "noise-classifier", "channels": [12]})

    def test_saved_file_records_kind_and_architecture(self, tmp_path):
        classifier = self.build()
        path = sfumato.save_component(classifier, tmp_path / "classifier.safetensors")
        assert sfumato.read_metadata(path)["sfumato.kind"] == "classifier"
        recorded = sfumato.read_component_spec(path)
        assert recorded["channels"] == [8, 16, 16] and recorded["num_classes"] == 3 and "weights" not in recorded
        loaded = sfumato.build("classifier", {**recorded, "weights": str(path)})
        assert torch.equal(loaded.head.weight, classifier.head.weight)
