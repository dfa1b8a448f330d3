"""Generation as blocks (``sfumato.blocks``): a third party's task is a few lines of them, and
they compose to what ``sfumato.generate`` makes."""

from __future__ import annotations

import types
from typing import Literal

import pytest
import torch

import sfumato
import sfumato_guidance
import sfumato_tasks
import sfumato_test_doubles
from sfumato.testing import fresh_registry
from sfumato_test_doubles import spec_dict


class Sketch(sfumato.Task):
    """A third party's task, written from the blocks alone: a prompt at half the spec's steps."""

    required = ("text_encoder", "denoiser", "scheduler", "diffusion")

    class Spec(sfumato.ComponentSpec):
        type: Literal["demo.sketch"] = "demo.sketch"

    def run(self, pipe, prompt, seed=0, steps=4):
        blocks, generator = sfumato.blocks, torch.Generator().manual_seed(seed)
        cond = blocks.condition(pipe, [prompt], None, [], 1)
        shape = blocks.latent_shape(pipe, 1, *blocks.native_size(pipe))
        schedule, plan = blocks.sampling_plan(pipe, shape, steps // 2)
        x = blocks.initial_latents(blocks.initial_noise(shape, pipe, generator), plan)
        step = sfumato.SamplerStep.for_plan(plan)
        model = blocks.guided_model(pipe, cond, [prompt], generator, schedule, plan, step)
        return blocks.decode(pipe, blocks.sample(pipe, model, plan, x, generator=generator, step=step, progress=False))


def demo_plugin() -> types.ModuleType:
    module = types.ModuleType("demo")
    module.SFUMATO_PLUGIN_API = 1
    module.register_components = sfumato.hookimpl(lambda register: register(Sketch))
    return module


@pytest.fixture
def registry():
    with fresh_registry(sfumato_test_doubles, demo_plugin()) as registry:
        registry.add_plugin("tasks", sfumato_tasks, "registry")
        registry.add_plugin("guidance", sfumato_guidance, "registry")
        yield registry


def test_a_third_party_task_from_the_blocks_makes_what_generate_makes(registry):
    torch.manual_seed(0)
    sketch = sfumato.load_pipeline(spec_dict(task={"type": "demo.sketch"}, scheduler={"type": "test.ddim", "steps": 8}))
    ours = sketch("a red circle", seed=3, steps=6)
    reference = sfumato.generate(sketch, "a red circle", seed=3, steps=3, progress=False).decoded
    assert ours.shape == (1, 3, 64, 64)  # no size anywhere: the fallback native size
    assert reference.std() > 0.01
    torch.testing.assert_close(ours, reference)


def test_the_size_defaults_to_the_task_then_the_model(registry):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 16, "width": 24}))
    assert sfumato.generate(pipe, "x", progress=False).images[0].size == (24, 16)
    pipe = sfumato.load_pipeline(spec_dict(task="text-to-image"))
    assert sfumato.blocks.native_size(pipe) == (sfumato.blocks.FALLBACK_SIZE,) * 2
    assert pipe("x", height=8, width=8, progress=False).images[0].size == (8, 8)


def test_diffusers_call_arguments_map_onto_the_spec(registry):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 8, "width": 8}))
    ours = pipe("x", steps=3, seed=5, num_images=2, progress=False)
    theirs = pipe("x", num_inference_steps=3, generator=torch.Generator().manual_seed(5), num_images_per_prompt=2,
                  output_type="pt", progress=False)
    torch.testing.assert_close(theirs.images, (ours.decoded / 2 + 0.5).clamp(0, 1))
    assert theirs.lock["arguments"]["seed"] == 5 and theirs.lock["arguments"]["num_images"] == 2
    listed = pipe("x", generator=[torch.Generator().manual_seed(s) for s in (5, 6)], num_images=2, output_type="np",
                  steps=3, progress=False)
    seeded = pipe("x", seed=[5, 6], num_images=2, steps=3, progress=False)
    assert listed.images.shape == (2, 8, 8, 3)
    torch.testing.assert_close(torch.from_numpy(listed.images), (seeded.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
    assert pipe("x", steps=3, output_type="latent", progress=False).images.shape == (1, 3, 8, 8)


def test_guidance_scale_sets_cfg_and_the_lock_records_it(registry):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 8, "width": 8},
                                           guidance=[{"type": "cfg", "scale": 2.0}]))
    low = pipe("x", steps=2, guidance_scale=1.0, progress=False)
    high = pipe("x", steps=2, guidance_scale=9.0, progress=False)
    assert [g["scale"] for g in high.lock["spec"]["guidance"]] == [9.0]
    assert pipe.guidance[0].spec.scale == 2.0  # the pipeline itself is unchanged
    assert not torch.allclose(low.decoded, high.decoded)
    torch.manual_seed(0)  # the same untrained weights
    unguided = sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 8, "width": 8}, guidance=[]))
    added = unguided("x", steps=2, guidance_scale=9.0, progress=False)
    assert [g["type"] for g in added.lock["spec"]["guidance"]] == ["cfg"]
    torch.testing.assert_close(added.decoded, high.decoded)


@pytest.mark.parametrize("arguments, needle", [
    ({"steps": 3, "num_inference_steps": 4}, "num_inference_steps: 4 disagrees with steps=3"),
    ({"seed": 1, "generator": torch.Generator().manual_seed(1)}, "generator: give a generator or seed"),
    ({"output_type": "jpeg"}, "output_type: 'jpeg' is not one of pil, np, pt, latent"),
    ({"guidance_scale": "high"}, "guidance_scale: 'high' is not a number"),
    ({"mask": torch.zeros(1, 1, 8, 8)}, "mask: a mask needs the image"),
    ({"mask_blur": -1, "image": torch.zeros(1, 3, 8, 8), "mask": torch.zeros(1, 1, 8, 8)}, "mask_blur: -1"),
])
def test_wrong_call_arguments_name_themselves(registry, arguments, needle):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(spec_dict(task={"type": "text-to-image", "height": 8, "width": 8}))
    with pytest.raises(sfumato.ArgumentError, match=needle):
        pipe("x", progress=False, **arguments)
