"""An SDXL diffusers folder loaded by sfumato generates what diffusers' ``StableDiffusionXLPipeline``
generates: same prompt, same initial latents, the folder's own Euler sampler and SDXL's guidance
scale 5, with and without a negative prompt (without one, SDXL's negative is all zeros), and with
size micro-conditioning other than the call's size.

Images are compared as floats in [0, 1] before uint8 rounding, diffusers' ``output_type="np"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

from sdxl.tiny_sdxl import SIZE  # noqa: E402

PROMPT = "a red circle above a blue square"
STEPS = 4
#: 2/255 on 8-bit images is the brief; the floats agree far closer.
TOLERANCE = 1e-3


def initial_latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference_pipeline(tiny_sdxl):
    return diffusers.StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)


@pytest.fixture(scope="module")
def pipe(tiny_sdxl):
    return sfumato.load_pipeline(tiny_sdxl)


def reference_images(reference, **call) -> np.ndarray:
    out = reference(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=initial_latents(),
                    output_type="np", **call)
    return out.images  # (B, H, W, 3) in [0, 1]


def sfumato_images(pipe: sfumato.Pipeline, **call) -> np.ndarray:
    result = pipe(PROMPT, latents=initial_latents(), steps=STEPS, progress=False, **call)
    return (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert 0.05 < theirs.std()  # not flat: a wrong weight would show
    assert np.abs(ours - theirs).max() < TOLERANCE


def test_the_folder_reads_as_sdxl(pipe):
    assert pipe.spec.text_encoder_2.type == "clip-text" and pipe.spec.text_encoder_2.final_norm is False
    assert pipe.spec.denoiser.addition_embed_type == "text_time" and pipe.spec.denoiser.transformer_layers == [1, 2]
    assert pipe.spec.autoencoder.scaling_factor == 0.13025
    assert (pipe.spec.scheduler.type, pipe.guidance[0].spec.scale) == ("euler", 5.0)
    assert (pipe.spec.task.height, pipe.spec.task.width) == (SIZE, SIZE)  # the U-Net's size: its native size
    assert pipe.text_encoder_2.tokenizer.pad_id == 0  # tokenizer_2 pads with "!", as SDXL's does


@pytest.mark.parametrize("negative_prompt", [None, "", "blurry"])
def test_sdxl_folder_generates_what_diffusers_generates(pipe, reference_pipeline, negative_prompt):
    theirs = reference_images(reference_pipeline, negative_prompt=negative_prompt)
    assert_same(sfumato_images(pipe, negative_prompt=negative_prompt), theirs)


def test_size_micro_conditioning_matches_diffusers(pipe, reference_pipeline):
    sizes = dict(original_size=(8, 24), crops_coords_top_left=(4, 2), target_size=(32, 32))
    theirs = reference_images(reference_pipeline, **sizes)
    assert np.abs(theirs - reference_images(reference_pipeline)).max() > 0.01  # the ids change the image
    assert_same(sfumato_images(pipe, **sizes), theirs)


def test_a_bad_size_input_names_it(pipe):
    with pytest.raises(sfumato.ArgumentError, match=r"original_size: \(8,\) is not a pair of whole numbers"):
        pipe(PROMPT, original_size=(8,), steps=1, progress=False)


def test_without_its_second_text_encoder_an_sdxl_unet_says_so(tiny_sdxl):
    spec = sfumato.get_registry().spec_from_checkpoint(tiny_sdxl)
    del spec["text_encoder_2"]
    with pytest.raises(sfumato.SpecError, match=r"needs its second text encoder in a \[text_encoder_2\] table"):
        sfumato.load_pipeline(spec)(PROMPT, steps=1, progress=False)
