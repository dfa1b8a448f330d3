"""An SDXL single-file checkpoint (Stability's SGM key layout: ``model.diffusion_model.*``,
``first_stage_model.*``, ``conditioner.embedders.0.transformer.*`` and, in open_clip's layout,
``conditioner.embedders.1.model.*``) loads and generates what diffusers generates from the folder
holding the same weights.

The file is written from the tiny diffusers folder; that it is the SGM layout is checked with
diffusers' own single-file converters, which read it back into the folder's weights exactly.
(diffusers' ``from_single_file`` itself cannot be the reference here: it recognises the second
text encoder by a key of its 23rd layer, which a tiny model does not have.)
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import sfumato

diffusers = pytest.importorskip("diffusers")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")

from sdxl.test_sdxl_parity import assert_same, reference_images, sfumato_images  # noqa: E402
from sdxl.tiny_sdxl import tiny_architecture_overrides, with_text_model  # noqa: E402


@pytest.fixture(scope="module")
def reference_pipeline(tiny_sdxl):
    return diffusers.StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)


def test_the_file_is_the_sgm_layout_by_diffusers_converters(tiny_sdxl, tiny_sdxl_file):
    checkpoint = load_file(tiny_sdxl_file)
    unet_config = json.loads((tiny_sdxl / "unet" / "config.json").read_text())
    unet = single_file_utils.convert_ldm_unet_checkpoint(checkpoint, unet_config)
    assert_equal_state(unet, load_file(tiny_sdxl / "unet" / "diffusion_pytorch_model.safetensors"))
    text = single_file_utils.convert_ldm_clip_checkpoint(checkpoint)  # embedders.0: a prefix diffusers removes
    assert_equal_state(text, {with_text_model(k): v for k, v in
                              load_file(tiny_sdxl / "text_encoder" / "model.safetensors").items()})
    encoder_2 = diffusers.StableDiffusionXLPipeline.from_pretrained(tiny_sdxl).text_encoder_2
    text_2 = single_file_utils.convert_open_clip_checkpoint(encoder_2, checkpoint, prefix="conditioner.embedders.1.model.")
    assert_equal_state(text_2, load_file(tiny_sdxl / "text_encoder_2" / "model.safetensors"))


def assert_equal_state(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_the_single_file_reads_as_sdxl(tiny_sdxl_file):
    spec = sfumato.get_registry().spec_from_checkpoint(tiny_sdxl_file)
    assert spec["text_encoder_2"]["prefix"] == "conditioner.embedders.1.model."
    assert spec["denoiser"]["addition_embed_type"] == "text_time" and spec["denoiser"]["weights"] == str(tiny_sdxl_file)
    assert spec["guidance"] == [{"type": "cfg", "scale": 5.0}]


@pytest.mark.parametrize("negative_prompt", [None, "blurry"])
def test_single_file_generates_what_diffusers_generates(tiny_sdxl, tiny_sdxl_file, reference_pipeline, negative_prompt):
    pipe = sfumato.load_pipeline(tiny_sdxl_file, tiny_architecture_overrides(tiny_sdxl))
    theirs = reference_images(reference_pipeline, negative_prompt=negative_prompt)
    assert_same(sfumato_images(pipe, negative_prompt=negative_prompt), theirs)


def test_a_refiner_file_with_one_text_encoder_is_named(tmp_path, tiny_sdxl_file):
    checkpoint = {k: v for k, v in load_file(tiny_sdxl_file).items()
                  if not k.startswith("conditioner.embedders.0.")}
    save_file(checkpoint, tmp_path / "refiner.safetensors")
    with pytest.raises(sfumato.SpecError, match=r"no conditioner.embedders.0.transformer.\* keys: the text encoder "
                       r"is missing \(SDXL base has two text encoders"):
        sfumato.load_pipeline(tmp_path / "refiner.safetensors")


def test_sfumato_convert_of_both_formats_reloads_to_the_same_images(tiny_sdxl, tiny_sdxl_file, tmp_path):
    """``sfumato convert`` writes one file per component (the second text encoder included, read
    whole although the single file's spec names its prefix) and reloads to identical images."""
    from sfumato.cli.convert_command import convert

    from sdxl.test_sdxl_parity import PROMPT, initial_latents

    def decoded(spec):
        return sfumato.load_pipeline(spec)(PROMPT, latents=initial_latents(), steps=2, progress=False).decoded

    folder_spec = convert(tiny_sdxl, tmp_path / "from-folder")
    file_spec = convert(tiny_sdxl_file, tmp_path / "from-file", tiny_architecture_overrides(tiny_sdxl))
    assert (tmp_path / "from-file" / "text_encoder_2.safetensors").is_file()
    reference = decoded(tiny_sdxl)
    assert torch.equal(decoded(folder_spec), reference) and torch.equal(decoded(file_spec), reference)
