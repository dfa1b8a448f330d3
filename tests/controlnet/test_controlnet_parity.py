"""``[[controlnet]]`` ControlNets generate what diffusers' ControlNet pipelines generate on the same
tiny SD 1.x folder, ControlNets and latents: one ControlNet with its scale, two at once
(``MultiControlNetModel``: residuals added up, one image each) with a step window, and with
image-to-image and inpainting.

Images are compared as floats in [0, 1] before uint8 rounding, diffusers' ``output_type="np"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sfumato

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SD15_SCHEDULER, SIZE  # noqa: E402

PROMPT = "a red circle above a blue square"
STEPS = 4
TOLERANCE = 1e-3


def control_image(seed: int) -> Image.Image:
    """A blocky control image at the pipeline's size (no resizing on either side)."""
    g = torch.Generator().manual_seed(seed)
    blocks = (torch.rand(3, 4, 4, generator=g) * 255).to(torch.uint8)
    array = blocks.repeat_interleave(SIZE // 4, 1).repeat_interleave(SIZE // 4, 2).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def initial_latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


def sfumato_pipeline(tiny_sd, controlnets: list[dict]) -> sfumato.Pipeline:
    spec = sfumato.get_registry().spec_from_checkpoint(tiny_sd)
    spec["controlnet"] = controlnets
    return sfumato.load_pipeline(spec, {"scheduler.type": "euler"})


def reference_pipeline(tiny_sd, paths, cls=None):
    nets = [diffusers.ControlNetModel.from_pretrained(p) for p in paths]
    cls = cls or diffusers.StableDiffusionControlNetPipeline
    pipe = cls.from_pretrained(tiny_sd, controlnet=nets[0] if len(nets) == 1 else nets, safety_checker=None,
                               requires_safety_checker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SD15_SCHEDULER)
    return pipe


def floats(result) -> np.ndarray:
    return (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert 0.05 < theirs.std()
    assert np.abs(ours - theirs).max() < TOLERANCE


def test_one_controlnet_generates_what_diffusers_generates(tiny_sd, tiny_controlnets):
    image = control_image(1)
    reference = reference_pipeline(tiny_sd, tiny_controlnets[:1])
    theirs = reference(PROMPT, image=image, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                       latents=initial_latents(), controlnet_conditioning_scale=0.8, output_type="np").images
    without = reference(PROMPT, image=image, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                        latents=initial_latents(), controlnet_conditioning_scale=0.0, output_type="np").images
    assert np.abs(theirs - without).max() > 0.02  # the ControlNet changes the image
    pipe = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": str(tiny_controlnets[0]), "scale": 0.8}])
    ours = pipe(PROMPT, negative_prompt="", latents=initial_latents(), steps=STEPS, control_image=image, progress=False)
    assert_same(floats(ours), theirs)


def test_two_controlnets_with_a_step_window_generate_what_diffusers_generates(tiny_sd, tiny_controlnets):
    images = [control_image(1), control_image(2)]
    reference = reference_pipeline(tiny_sd, tiny_controlnets)
    theirs = reference(PROMPT, image=images, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                       latents=initial_latents(), controlnet_conditioning_scale=[0.8, 0.5],
                       control_guidance_start=[0.0, 0.25], control_guidance_end=[1.0, 0.75], output_type="np").images
    pipe = sfumato_pipeline(tiny_sd, [
        {"type": "controlnet", "weights": str(tiny_controlnets[0]), "scale": 0.8},
        {"type": "controlnet", "weights": str(tiny_controlnets[1]), "scale": 0.5, "start": 0.25, "end": 0.75},
    ])
    ours = pipe(PROMPT, negative_prompt="", latents=initial_latents(), steps=STEPS, control_image=images, progress=False)
    assert_same(floats(ours), theirs)


def test_controlnet_needs_its_image_and_two_need_a_list(tiny_sd, tiny_controlnets):
    one = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": str(tiny_controlnets[0])}])
    with pytest.raises(sfumato.ArgumentError, match="control_image: this pipeline has 1 \\[\\[controlnet\\]\\]"):
        one(PROMPT, steps=1, progress=False)
    two = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": str(p)} for p in tiny_controlnets])
    with pytest.raises(sfumato.ArgumentError, match="2 ControlNets need a list of 2 images"):
        two(PROMPT, steps=1, progress=False, control_image=control_image(1))


def test_controlnet_with_image_to_image_generates_what_diffusers_generates(tiny_sd, tiny_controlnets):
    """diffusers' ``StableDiffusionControlNetImg2ImgPipeline`` given the init image's latents (the
    posterior mode, which sfumato encodes to) and the generator whose first draw is sfumato's noise."""
    init, noise = control_image(5), initial_latents()
    reference = reference_pipeline(tiny_sd, tiny_controlnets[:1], diffusers.StableDiffusionControlNetImg2ImgPipeline)
    init_latents = reference.vae.encode(sfumato.from_pil(init)).latent_dist.mode() * reference.vae.config.scaling_factor
    theirs = reference(PROMPT, image=init_latents, control_image=control_image(1), strength=0.6, negative_prompt="",
                       height=SIZE, width=SIZE, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(7),
                       controlnet_conditioning_scale=0.8, output_type="np").images
    pipe = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": str(tiny_controlnets[0]), "scale": 0.8}])
    ours = pipe(PROMPT, image=init, strength=0.6, negative_prompt="", latents=noise, steps=STEPS,
                control_image=control_image(1), progress=False)
    assert_same(floats(ours), theirs)


def test_controlnet_with_inpainting_steers_the_new_region_and_keeps_the_rest(tiny_sd, tiny_controlnets, monkeypatch):
    """Inpainting with a ControlNet: at scale 0 exactly the inpainting without one; at scale 1 a
    different new region, the kept half pasted back, and before the paste what diffusers'
    ``StableDiffusionControlNetInpaintPipeline`` generates (given the image's latents by their
    mean, as sfumato encodes: diffusers samples them)."""
    from diffusers.pipelines.controlnet import pipeline_controlnet_inpaint as module

    monkeypatch.setattr(module, "retrieve_latents", lambda output, generator=None, sample_mode="sample":
                        output.latent_dist.mode())
    init = control_image(5)
    half = torch.cat([torch.ones(1, 3, SIZE, SIZE // 2), -torch.ones(1, 3, SIZE, SIZE // 2)], -1)
    mask = sfumato.to_pil(half)[0]  # white (generated) on the left
    call = dict(image=init, mask=mask, negative_prompt="", latents=initial_latents(), steps=STEPS, progress=False)
    spec = sfumato.get_registry().spec_from_checkpoint(tiny_sd)
    plain = sfumato.load_pipeline(spec, {"scheduler.type": "euler"})(PROMPT, **call)
    weights = str(tiny_controlnets[0])
    off = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": weights, "scale": 0.0}])(
        PROMPT, control_image=control_image(1), **call)
    on = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": weights}])(
        PROMPT, control_image=control_image(1), **call)
    assert torch.equal(off.decoded, plain.decoded)
    left, right = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    assert (on.decoded - plain.decoded)[..., left].abs().max() > 0.02
    kept = np.asarray(init, dtype=np.int16)[:, right]
    assert np.abs(np.asarray(on.images[0], dtype=np.int16)[:, right] - kept).max() <= 1
    reference = reference_pipeline(tiny_sd, tiny_controlnets[:1], diffusers.StableDiffusionControlNetInpaintPipeline)
    theirs = reference(PROMPT, image=init, mask_image=mask, control_image=control_image(1), negative_prompt="",
                       height=SIZE, width=SIZE, num_inference_steps=STEPS, latents=initial_latents(), strength=1.0,
                       controlnet_conditioning_scale=1.0, output_type="np").images  # its default is 0.5
    assert_same(floats(on), theirs)


def test_the_command_line_takes_control_images(tiny_sd, tiny_controlnets, tmp_path):
    """``sfumato generate --control-image FILE`` (once per ControlNet) gives the pipeline call's
    ``control_image``: the written image is the one the Python call makes."""
    import json

    from sfumato.cli import main

    spec = sfumato.get_registry().spec_from_checkpoint(tiny_sd)
    spec["controlnet"] = [{"type": "controlnet", "weights": str(p)} for p in tiny_controlnets]
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    images = [control_image(1), control_image(2)]
    for i, image in enumerate(images):
        image.save(tmp_path / f"control-{i}.png")
    out = tmp_path / "out.png"
    code = main(["generate", "--spec", str(spec_path), PROMPT, "--steps", "2", "--no-progress", "--out", str(out),
                 "--control-image", str(tmp_path / "control-0.png"), "--control-image", str(tmp_path / "control-1.png")])
    assert code in (0, None)
    expected = sfumato.load_pipeline(spec_path)(PROMPT, steps=2, control_image=images, progress=False).images[0]
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
    assert main(["generate", "--spec", str(spec_path), PROMPT, "--steps", "2", "--no-progress", "--out",
                 str(tmp_path / "one.png"), "--control-image", str(tmp_path / "control-0.png")]) == 2


def test_a_single_file_in_the_original_layout_generates_what_diffusers_generates(tiny_sd, tiny_controlnets,
                                                                                 tiny_controlnet_file):
    """A ``control_model.*`` file (checked to be that layout by diffusers' own converter) with the
    tiny architecture given in ``architecture`` equals diffusers with the ControlNet folder.

    diffusers' converter assumes the original four-stage image embedding (its last convolution is
    ``input_hint_block.14``); the tiny one has two stages (last at ``.6``), so its embedding keys
    are left out of that check; the images below check them."""
    import json

    from safetensors.torch import load_file

    single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")
    config = json.loads((tiny_controlnets[0] / "config.json").read_text())
    converted = single_file_utils.convert_controlnet_checkpoint(load_file(tiny_controlnet_file), config)
    original = load_file(tiny_controlnets[0] / "diffusion_pytorch_model.safetensors")
    converted, original = ({k: v for k, v in state.items() if not k.startswith("controlnet_cond_embedding.")}
                           for state in (converted, original))
    assert sorted(converted) == sorted(original) and all(torch.equal(converted[k], original[k]) for k in original)

    architecture = {k: config[k] for k in ("block_out_channels", "layers_per_block", "cross_attention_dim",
                                           "attention_head_dim", "norm_num_groups", "down_block_types",
                                           "conditioning_embedding_out_channels")}
    image = control_image(1)
    reference = reference_pipeline(tiny_sd, tiny_controlnets[:1])
    theirs = reference(PROMPT, image=image, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                       latents=initial_latents(), output_type="np").images
    pipe = sfumato_pipeline(tiny_sd, [{"type": "controlnet", "weights": str(tiny_controlnet_file),
                                       "architecture": architecture}])
    ours = pipe(PROMPT, negative_prompt="", latents=initial_latents(), steps=STEPS, control_image=image, progress=False)
    assert_same(floats(ours), theirs)


def test_an_sdxl_controlnet_generates_what_diffusers_generates(tiny_sdxl_with_controlnet):
    """The same ``[[controlnet]]`` on SDXL (its ControlNet reads ``text_embeds`` and ``time_ids``
    from the extras as the U-Net does) equals ``StableDiffusionXLControlNetPipeline``."""
    folder, controlnet = tiny_sdxl_with_controlnet
    image = control_image(1)
    reference = diffusers.StableDiffusionXLControlNetPipeline.from_pretrained(
        folder, controlnet=diffusers.ControlNetModel.from_pretrained(controlnet))
    theirs = reference(PROMPT, image=image, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                       latents=initial_latents(), controlnet_conditioning_scale=0.8, output_type="np").images
    spec = sfumato.get_registry().spec_from_checkpoint(folder)
    spec["controlnet"] = [{"type": "controlnet", "weights": str(controlnet), "scale": 0.8}]
    ours = sfumato.load_pipeline(spec)(PROMPT, latents=initial_latents(), steps=STEPS, control_image=image,
                                       progress=False)
    assert_same(floats(ours), theirs)
