"""SD's 9-channel inpainting U-Net (``StableDiffusionInpaintPipeline``: the latents, the mask and
the masked image's latents concatenated) loads from a diffusers folder and generates what diffusers
generates on the same weights, prompt, image, mask and latents (<= 2/255 on 8-bit images)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import sfumato

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE, UNET, perturb  # noqa: E402

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def tiny_inpaint(tiny_sd, tmp_path_factory):
    """The tiny SD folder with a 9-channel U-Net, as a ``StableDiffusionInpaintPipeline``."""
    folder = tmp_path_factory.mktemp("tiny-inpaint") / "pipeline"
    shutil.copytree(tiny_sd, folder)
    torch.manual_seed(0)
    perturb(diffusers.UNet2DConditionModel(**{**UNET, "in_channels": 9}), seed=4).save_pretrained(folder / "unet")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionInpaintPipeline"}))
    return folder


def inputs():
    g = torch.Generator().manual_seed(3)
    image = Image.fromarray((torch.rand(SIZE, SIZE, 3, generator=g) * 255).to(torch.uint8).numpy())
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2:] = 255
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=g)
    return image, Image.fromarray(mask), latents


def test_a_nine_channel_inpainting_unet_generates_what_diffusers_generates(tiny_inpaint):
    image, mask, latents = inputs()
    reference = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
        tiny_inpaint, safety_checker=None, requires_safety_checker=False)
    reference.scheduler = diffusers.DDIMScheduler.from_config(reference.scheduler.config)
    pixels = sfumato.from_pil(image)
    with torch.no_grad():  # the masked image's latents by the posterior mean, as sfumato encodes
        masked = reference.vae.encode(pixels * (sfumato.from_pil(mask)[:, :1] < 0)).latent_dist.mode()
    theirs = reference(
        PROMPT, image=image, mask_image=mask, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=4,
        guidance_scale=7.5, latents=latents, masked_image_latents=masked * reference.vae.config.scaling_factor,
        strength=1.0, output_type="np",
    ).images  # (1, H, W, 3) in [0, 1]

    pipe = sfumato.load_pipeline(tiny_inpaint, {"scheduler.type": "ddim"})
    assert pipe.spec.task.type == "inpaint" and pipe.component("denoiser").in_channels == 9
    result = pipe(PROMPT, image=image, mask=mask, negative_prompt="", latents=latents, steps=4, mask_blur=0,
                  progress=False)
    ours = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert theirs.std() > 0.05
    assert np.abs(ours - theirs).max() * 255 <= 2
    kept = np.asarray(result.images[0], dtype=np.int16)[:, : SIZE // 2]
    assert np.abs(kept - np.asarray(image, dtype=np.int16)[:, : SIZE // 2]).max() == 0  # pasted back


def test_an_inpainting_unet_without_a_mask_says_what_it_needs(tiny_inpaint):
    pipe = sfumato.load_pipeline(tiny_inpaint)
    with pytest.raises(sfumato.ArgumentError, match="inpainting model .9 input channels.*give an image and a mask"):
        sfumato.generate(pipe, PROMPT, steps=1, progress=False)


def test_inpainting_with_an_ordinary_unet_generates_what_diffusers_generates(tiny_sd, monkeypatch):
    """A 4-channel U-Net: the kept region is blended back after every step, noised to the next
    level with the sample's own initial noise (diffusers' ``init_latents_proper``)."""
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as module

    # diffusers samples the image's latent distribution; sfumato encodes by its mean
    monkeypatch.setattr(module, "retrieve_latents", lambda output, generator=None, sample_mode="sample":
                        output.latent_dist.mode())
    image, mask, latents = inputs()
    reference = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
        tiny_sd, safety_checker=None, requires_safety_checker=False)
    reference.scheduler = diffusers.EulerDiscreteScheduler.from_config(reference.scheduler.config)
    theirs = reference(
        PROMPT, image=image, mask_image=mask, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=4,
        guidance_scale=7.5, latents=latents, strength=1.0, output_type="np",
    ).images

    pipe = sfumato.load_pipeline(tiny_sd, {"scheduler.type": "euler", "task.type": "inpaint"})
    result = pipe(PROMPT, image=image, mask=mask, negative_prompt="", latents=latents, steps=4, mask_blur=0,
                  progress=False)
    ours = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert theirs.std() > 0.05
    assert np.abs(ours - theirs).max() < 1e-3  # float32 rounding; fresh noise for the kept region: 0.06
