"""The first-party generation tasks on the test-double components."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_tasks
import sfumato_test_doubles
from sfumato.testing import ComponentConformance, fresh_registry
from sfumato_test_doubles import spec_dict


@pytest.fixture
def registry():
    with fresh_registry(sfumato_test_doubles) as registry:
        registry.add_plugin("tasks", sfumato_tasks, "registry")
        yield registry


def load(task: str, **changes):
    torch.manual_seed(0)
    return sfumato.load_pipeline(spec_dict(task={"type": task, "height": 16, "width": 16}, **changes))


def test_text_to_image_needs_a_prompt_and_a_text_encoder(registry):
    pipe = load("text-to-image")
    result = pipe("a red circle", progress=False)
    assert result.images[0].size == (16, 16)
    with pytest.raises(sfumato.SpecError, match="needs prompt"):
        pipe(progress=False)
    spec = spec_dict(task="text-to-image")
    del spec["text_encoder"]
    with pytest.raises(sfumato.SpecError, match=r"task 'text-to-image' needs the table\(s\) \[text_encoder\]"):
        sfumato.load_pipeline(spec)


def test_image_to_image_defaults_to_partial_strength(registry):
    pipe = load("image-to-image", scheduler={"type": "test.ddim", "steps": 10})
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    steps = []
    pipe("x", image=image, callback=lambda e: steps.append(e.i), progress=False)
    assert len(steps) == 6
    with pytest.raises(sfumato.SpecError, match="needs image"):
        pipe("x", progress=False)


def test_inpaint_needs_image_and_mask(registry):
    pipe = load("inpaint")
    with pytest.raises(sfumato.SpecError, match="needs mask"):
        pipe("x", image=torch.zeros(1, 3, 16, 16), progress=False)
    mask = torch.zeros(1, 1, 16, 16)
    result = pipe("x", image=torch.zeros(1, 3, 16, 16), mask=mask, progress=False)
    assert torch.allclose(result.latents, torch.zeros_like(result.latents), atol=1e-5)


def test_class_to_image_and_unconditional(registry):
    spec = spec_dict(task={"type": "class-to-image", "height": 8, "width": 8},
                     denoiser={"type": "test.linear", "num_classes": 3})
    del spec["text_encoder"]
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(spec)
    assert len(pipe(labels=[0, 2], progress=False).images) == 2
    with pytest.raises(sfumato.SpecError, match="needs labels"):
        pipe(progress=False)
    uncond = load("unconditional")
    assert len(uncond(num_images=2, progress=False).images) == 2


@pytest.mark.parametrize("task", ["text-to-image", "image-to-image", "inpaint", "class-to-image", "unconditional"])
class TestTaskConformance(ComponentConformance):
    kind = "task"

    @pytest.fixture(autouse=True)
    def _registry(self, registry, task):
        self.spec = {"type": task}
