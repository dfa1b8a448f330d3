"""Guidance from spec files: ``[[guidance]]`` entries compose in spec order inside a Pipeline
built from tiny first-party components, and reach the ``[classifier]``, ``[image_encoder]``,
``[text_encoder]`` and ``[autoencoder]`` tables through the guidance context."""

from __future__ import annotations

import pytest
import torch

import sfumato
from guidance.toys import TINY_CLIP, sample

DIFFUSION = {"betas": "linear", "beta_start": 1e-4, "beta_end": 0.02}
VAE = {"type": "vae-kl", "block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4}
UNET = {"type": "unet", "in_channels": 4, "out_channels": 4, "block_out_channels": [8, 16], "attention": [False, True],
        "mid_attention": False, "norm_num_groups": 4}


def class_pipeline(guidance: list[dict]) -> sfumato.Pipeline:
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline({
        "task": "class-to-image",
        "runtime": {"allow_untrained": True},
        "autoencoder": VAE,
        "denoiser": {**UNET, "num_classes": 2, "null_class": True},
        "classifier": {"type": "noise-classifier", "in_channels": 4, "num_classes": 2, "channels": [8, 16]},
        "diffusion": DIFFUSION,
        "scheduler": {"type": "heun", "steps": 3},
        "guidance": guidance,
    })
    assert pipe.denoiser.null_label == 2  # the negative classifier-free guidance uses
    return pipe


def text_pipeline(guidance: list[dict]) -> sfumato.Pipeline:
    torch.manual_seed(0)
    return sfumato.load_pipeline({
        "task": "text-to-image",
        "runtime": {"allow_untrained": True},
        "text_encoder": {"type": "clip-text", "architecture": TINY_CLIP},
        "image_encoder": {"type": "clip-image", "architecture": TINY_CLIP},
        "autoencoder": VAE,
        "denoiser": {**UNET, "cross_attention_dim": 32},
        "diffusion": DIFFUSION,
        "scheduler": {"type": "dpmpp-2m", "steps": 3},
        "guidance": guidance,
    })


def test_cfg_then_classifier_in_a_pipeline_equals_wrapping_them_in_that_order():
    specs = [{"type": "cfg", "scale": 3.0}, {"type": "classifier", "scale": 5.0}]
    pipe = class_pipeline(specs)
    result = pipe(labels=[0, 1], height=8, width=8, seed=5, progress=False)
    labels = torch.tensor([0, 1])
    cond = sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, 2)))
    cfg, classifier = (sfumato.build("guidance", s) for s in specs)
    expected = sample(pipe.denoiser, pipe.schedule, pipe.scheduler, [cfg, classifier], cond, (2, 4, 4, 4),
                      components=pipe.components, steps=3, seed=5)
    reversed_order = sample(pipe.denoiser, pipe.schedule, pipe.scheduler, [classifier, cfg], cond, (2, 4, 4, 4),
                            components=pipe.components, steps=3, seed=5)
    assert torch.equal(result.latents, expected)
    assert not torch.equal(result.latents, reversed_order)  # the classifier sees the CFG-guided x0 only in order
    unguided = class_pipeline([])(labels=[0, 1], height=8, width=8, seed=5, progress=False)
    assert (result.latents - unguided.latents).abs().max() > 1e-3


def test_neutral_guidance_in_a_pipeline_is_exactly_unguided():
    neutral = [{"type": "cfg", "scale": 1.0}, {"type": "classifier", "scale": 0.0}]
    kwargs = dict(labels=[1], height=8, width=8, seed=2, progress=False)
    assert torch.equal(class_pipeline(neutral)(**kwargs).latents, class_pipeline([])(**kwargs).latents)


def test_clip_guidance_on_latents_from_a_spec_is_finite_and_repeatable():
    pipe = text_pipeline([{"type": "cfg", "scale": 2.0}, {"type": "clip", "scale": 500.0, "cutouts": 2}])
    kwargs = dict(height=8, width=8, seed=1, progress=False)
    first = pipe("a red circle", **kwargs)
    assert first.latents.shape == (1, 4, 4, 4) and torch.isfinite(first.latents).all()
    assert torch.equal(pipe("a red circle", **kwargs).latents, first.latents)
    cfg_only = text_pipeline([{"type": "cfg", "scale": 2.0}])("a red circle", **kwargs)
    assert (first.latents - cfg_only.latents).abs().max() > 1e-4


@pytest.mark.parametrize("table, message", [("classifier", r"\[classifier\] table"), ("image_encoder", r"\[image_encoder\] table")])
def test_a_missing_table_is_reported_when_generating(table, message):
    if table == "classifier":
        pipe = class_pipeline([{"type": "classifier", "scale": 1.0}])
        pipe.components.pop("classifier")
        call = lambda: pipe(labels=[0], height=8, width=8, progress=False)  # noqa: E731
    else:
        pipe = text_pipeline([{"type": "clip", "scale": 1.0}])
        pipe.components.pop("image_encoder")
        call = lambda: pipe("a red circle", height=8, width=8, progress=False)  # noqa: E731
    with pytest.raises(ValueError, match=message):
        call()
