"""diffusers' call arguments on a diffusers SD folder: ``guidance_scale``, ``num_inference_steps``,
``generator`` (one, or one per image), ``num_images_per_prompt`` and ``output_type`` give what
``StableDiffusionPipeline`` gives for the same arguments; the size defaults to the U-Net's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE  # noqa: E402

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def reference(tiny_sd):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.mark.parametrize("generator", ["one", "per-image"])
def test_diffusers_arguments_give_diffusers_images(tiny_sd, reference, generator):
    def generators():
        return torch.Generator().manual_seed(5) if generator == "one" else \
            [torch.Generator().manual_seed(s) for s in (5, 6)]

    arguments = dict(guidance_scale=3.0, num_inference_steps=4, num_images_per_prompt=2, output_type="np")
    theirs = reference(PROMPT, negative_prompt="", generator=generators(), **arguments).images
    pipe = sfumato.load_pipeline(tiny_sd, {"scheduler.type": "ddim"})
    ours = pipe(PROMPT, negative_prompt="", generator=generators(), progress=False, **arguments)
    assert ours.images.shape == theirs.shape == (2, SIZE, SIZE, 3)
    assert np.abs(ours.images - theirs).max() < 1e-3
    assert [g["scale"] for g in ours.lock["spec"]["guidance"]] == [3.0]
    assert pipe.guidance[0].spec.scale == 7.5  # the folder's own scale stays


def test_the_size_defaults_to_the_unets_sample_size(tiny_sd):
    pipe = sfumato.load_pipeline(tiny_sd, {"task.height": None, "task.width": None})  # a task without a size
    assert pipe.spec.task.height is None
    assert sfumato.blocks.native_size(pipe) == (SIZE, SIZE)  # sample_size 8 x the autoencoder's downscale 2
    assert sfumato.generate(pipe, PROMPT, steps=1, progress=False).images[0].size == (SIZE, SIZE)
