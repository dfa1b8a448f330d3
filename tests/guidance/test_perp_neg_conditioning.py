"""Perp-neg beyond SD 1.x: the empty prompt's branch gets the call's full conditioning
(``GuidanceContext.encode``: on SDXL both text encoders, the pooled ``text_embeds`` and the size
``time_ids``; a ControlNet's control images), so it batches with the call's rows on the tiny SDXL
folder and on a tiny SD 1.x with a ControlNet, and with the negative prompt "" it is plain
classifier-free guidance; with the positive prompt "" too (the empty prompt against itself) it
stays finite."""

from __future__ import annotations

import copy

import pytest
import torch

import sfumato

pytest.importorskip("diffusers")

from sdxl.tiny_sdxl import SIZE, write_tiny_sdxl  # noqa: E402

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return sfumato.load_pipeline(write_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl")))


def with_combiner(pipe: sfumato.Pipeline, combiner) -> sfumato.Pipeline:
    variant = copy.copy(pipe)
    variant.guidance = [sfumato.build("guidance", {"type": "cfg", "scale": 5.0, "combiner": combiner})]
    return variant


def latents() -> torch.Tensor:
    return torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


def run(pipe: sfumato.Pipeline, **call) -> torch.Tensor:
    return pipe(PROMPT, latents=latents(), num_images=2, steps=3, progress=False, output_type="latent", **call).latents


def test_the_run_context_encodes_a_prompt_as_the_call_does(pipe):
    request = sfumato.conditioners.ConditioningRequest(pipe, [PROMPT], [""], 24, 40, {"crops_coords_top_left": (4, 2)})
    call = sfumato.conditioners.extra_conditioning(sfumato.blocks.encode_prompts(pipe, [PROMPT], [""]), request)
    context = sfumato.GuidanceContext(schedule=pipe.schedule, components=dict(pipe.components),
                                      conditioner=sfumato.blocks.prompt_conditioner(pipe, 24, 40, request.inputs))
    encoded = context.encode([PROMPT])
    assert encoded.negative is None and sorted(encoded.extras) == ["text_embeds", "time_ids"]
    first_encoder_width = pipe.component("text_encoder").encode([""]).tokens.shape[-1]
    assert encoded.tokens.shape[-1] == call.tokens.shape[-1] > first_encoder_width  # both encoders' tokens
    torch.testing.assert_close(encoded.tokens, call.tokens)
    torch.testing.assert_close(encoded.extras["text_embeds"], call.extras["text_embeds"])
    assert encoded.extras["time_ids"].tolist() == [[24, 40, 4, 2, 24, 40]]  # the call's size and inputs


def test_perp_neg_runs_on_sdxl_and_with_an_empty_negative_is_plain_cfg(pipe):
    plain = run(with_combiner(pipe, "cfg"), negative_prompt="")
    perp = with_combiner(pipe, {"type": "perp-neg", "neg_scale": 1.0})
    same = run(perp, negative_prompt="")
    torch.testing.assert_close(same, plain, atol=1e-4, rtol=1e-4)
    pushed = run(perp, negative_prompt="blurry")
    assert torch.isfinite(pushed).all()
    assert (pushed - plain).abs().max() > 1e-3
    assert (pushed - run(with_combiner(pipe, "cfg"), negative_prompt="blurry")).abs().max() > 1e-3  # not plain CFG


def test_perp_neg_with_the_empty_prompt_itself_is_finite():
    """The positive prompt "" predicts what the empty prompt does (pos = 0): no 0 / 0."""
    shapes = sfumato.load_pipeline("shapes", {"guidance": [{"type": "cfg", "scale": 5.0, "combiner": "perp-neg"}]})
    plain = sfumato.load_pipeline("shapes", {"guidance": [{"type": "cfg", "scale": 5.0}]})
    out = shapes("", seed=0, steps=3, progress=False, output_type="latent").latents
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, plain("", seed=0, steps=3, progress=False, output_type="latent").latents)


def test_perp_neg_with_a_controlnet_gives_the_empty_prompt_the_control_images(tmp_path):
    """The empty prompt's rows carry the call's control images (one per sample), so a ControlNet
    steers all three predictions; with the negative prompt "" it is plain CFG."""
    diffusers = pytest.importorskip("diffusers")
    from sd.tiny_sd import SIZE as SD_SIZE, perturb, write_tiny_sd

    folder = write_tiny_sd(tmp_path / "sd")
    unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet")
    net = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    perturb(net, seed=20, scale=0.1).save_pretrained(tmp_path / "controlnet")
    spec = sfumato.get_registry().spec_from_checkpoint(folder)
    spec["controlnet"] = [{"type": "controlnet", "weights": str(tmp_path / "controlnet")}]
    images = torch.rand(2, 3, SD_SIZE, SD_SIZE, generator=torch.Generator().manual_seed(1))

    def run_with(combiner, negative):
        spec["guidance"] = [{"type": "cfg", "scale": 5.0, "combiner": combiner}]
        pipe = sfumato.load_pipeline(spec, {"scheduler.type": "euler"})
        noise = torch.randn(2, 4, SD_SIZE // 2, SD_SIZE // 2, generator=torch.Generator().manual_seed(7))
        return pipe([PROMPT, PROMPT], negative_prompt=negative, latents=noise, steps=3, control_image=images,
                    progress=False, output_type="latent").latents

    torch.testing.assert_close(run_with("perp-neg", ""), run_with("cfg", ""), atol=1e-4, rtol=1e-4)
    pushed = run_with("perp-neg", "blurry")
    assert torch.isfinite(pushed).all() and (pushed - run_with("cfg", "blurry")).abs().max() > 1e-3
