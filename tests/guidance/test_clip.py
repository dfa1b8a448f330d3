"""CLIP guidance: the spherical distance, cutouts, the score shift, which towers it uses, and its
effect with a tiny CLIP trained in the test on red / blue images."""

from __future__ import annotations

import math

import pytest
import torch

import sfumato
from guidance.toys import BLUE_PROMPT, RED_PROMPT, TINY_CLIP, class_of, clip_similarity, sample
from sfumato_guidance.clip_guidance import CUTOUT_SEED_OFFSET, spherical_distance
from sfumato_guidance.cutouts import random_cutouts


def test_spherical_distance_is_half_the_squared_angle():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    v = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    expected = torch.tensor([0.0, (math.pi / 2) ** 2 / 2, math.pi**2 / 2, (math.pi / 4) ** 2 / 2])
    torch.testing.assert_close(spherical_distance(u, v), expected, atol=1e-5, rtol=1e-5)


def test_cutouts_are_cutout_major_seeded_and_differentiable():
    images = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 3, 16, 16).clone().requires_grad_(True)
    cuts = random_cutouts(images, 4, 8, 1.0, torch.Generator().manual_seed(0))
    assert cuts.shape == (12, 3, 8, 8)
    # row k * B + b is a cutout of image b (each image is constant b)
    torch.testing.assert_close(cuts.mean(dim=(1, 2, 3)), torch.arange(3.0).repeat(4))
    again = random_cutouts(images, 4, 8, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(cuts, again)
    varied = torch.randn(1, 3, 16, 16)
    first, other = (random_cutouts(varied, 4, 8, 1.0, torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(first, other)
    cuts.sum().backward()
    assert images.grad.abs().sum() > 0
    # images smaller than the CLIP size are enlarged
    assert random_cutouts(torch.randn(2, 3, 4, 4), 2, 8, 1.0, torch.Generator()).shape == (4, 3, 8, 8)


def test_guided_eps_follows_the_gradient_of_the_clip_distance(mixture, schedule, random_clip):
    image_encoder, text_encoder = random_clip
    guidance = sfumato.build("guidance", {"type": "clip", "scale": 50.0, "cutouts": 3, "through_model": False})
    context = sfumato.GuidanceContext(schedule=schedule, components={"image_encoder": image_encoder, "text_encoder": text_encoder},
                                      prompts=[RED_PROMPT, BLUE_PROMPT], generator=torch.Generator().manual_seed(9))
    base = sfumato.bind_predictor(mixture, schedule)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([300.0, 600.0])
    with torch.no_grad():
        guided = guidance.wrap(base, context)(x, t, sfumato.Conditioning())
        plain = base(x, t, sfumato.Conditioning())
        text = text_encoder.encode([RED_PROMPT, BLUE_PROMPT]).pooled
    a = schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    x_in = x.clone().requires_grad_(True)
    x0 = (x_in - (1 - a).sqrt() * plain.eps) / a.sqrt()
    cuts = random_cutouts(x0, 3, 8, 1.0, torch.Generator().manual_seed(9 + CUTOUT_SEED_OFFSET))
    loss = spherical_distance(image_encoder.encode(cuts).pooled, text.repeat(3, 1)).reshape(3, 2).mean(0).sum()
    (grad,) = torch.autograd.grad(loss, x_in)
    torch.testing.assert_close(guided.eps, plain.eps + 50.0 * (1 - a).sqrt() * grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.sqrt() * guided.x0 + (1 - a).sqrt() * guided.eps, x, atol=1e-4, rtol=1e-4)


def test_each_wrap_restarts_the_cutouts_so_runs_repeat(mixture, schedule, random_clip):
    image_encoder, text_encoder = random_clip
    guidance = sfumato.build("guidance", {"type": "clip", "scale": 200.0, "cutouts": 2})
    run = dict(components={"image_encoder": image_encoder, "text_encoder": text_encoder}, prompts=[RED_PROMPT], steps=3)
    first = sample(mixture, schedule, "euler-ancestral", [guidance], sfumato.Conditioning(), (1, 3, 8, 8), **run)
    second = sample(mixture, schedule, "euler-ancestral", [guidance], sfumato.Conditioning(), (1, 3, 8, 8), **run)
    assert torch.equal(first, second)


def test_spec_prompt_and_nested_text_encoder_replace_the_pipeline_ones(mixture, schedule, random_clip, tmp_path):
    image_encoder, text_encoder = random_clip
    weights = sfumato.save_component(text_encoder, tmp_path / "text.safetensors")
    nested = sfumato.build("guidance", {"type": "clip", "scale": 80.0, "cutouts": 2, "prompt": RED_PROMPT,
                                        "text_encoder": {"type": "clip-text", "weights": str(weights)}})
    direct = sfumato.build("guidance", {"type": "clip", "scale": 80.0, "cutouts": 2})
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 500.0)
    base = sfumato.bind_predictor(mixture, schedule)

    def run(guidance, components, prompts):
        ctx = sfumato.GuidanceContext(schedule=schedule, components=components, prompts=prompts, generator=torch.Generator())
        with torch.no_grad():
            return guidance.wrap(base, ctx)(x, t, sfumato.Conditioning())

    mismatched_text = sfumato.build("encoder", {"type": "clip-text", "architecture": {**TINY_CLIP, "embed_dim": 8}})
    via_nested = run(nested, {"image_encoder": image_encoder, "text_encoder": mismatched_text}, [BLUE_PROMPT] * 2)
    via_pipeline = run(direct, {"image_encoder": image_encoder, "text_encoder": text_encoder}, [RED_PROMPT] * 2)
    torch.testing.assert_close(via_nested.eps, via_pipeline.eps)
    with pytest.raises(ValueError, match="text encoder's embeddings are 8 wide but the image encoder's are 16"):
        run(direct, {"image_encoder": image_encoder, "text_encoder": mismatched_text}, [RED_PROMPT] * 2)


def test_errors_name_the_missing_tower_or_prompt(schedule, random_clip):
    image_encoder, text_encoder = random_clip
    guidance = sfumato.build("guidance", {"type": "clip"})
    base = sfumato.bind_predictor(lambda x, t, c: x, schedule)
    with pytest.raises(ValueError, match=r"add an \[image_encoder\] table"):
        guidance.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={"text_encoder": text_encoder}, prompts=["x"]))
    with pytest.raises(ValueError, match="needs a prompt"):
        guidance.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={"image_encoder": image_encoder,
                                                                                   "text_encoder": text_encoder}))
    with pytest.raises(sfumato.PluginError, match="image_encoder must be a image encoder"):
        sfumato.build("guidance", {"type": "clip", "image_encoder": {"type": "clip-text", "architecture": TINY_CLIP}})


def test_clip_guidance_raises_similarity_to_the_prompt(means, mixture, schedule, colour_clip):
    image_encoder, text_encoder = colour_clip
    components = {"image_encoder": image_encoder, "text_encoder": text_encoder}

    def run(scale: float) -> torch.Tensor:
        guidance = sfumato.build("guidance", {"type": "clip", "scale": scale, "cutouts": 4})
        return sample(mixture, schedule, "ddim", [guidance], sfumato.Conditioning(), (32, 3, 8, 8),
                      components=components, prompts=[RED_PROMPT] * 32, steps=15, seed=4)

    unguided, guided = run(0.0), run(100.0)
    before = clip_similarity(unguided, RED_PROMPT, image_encoder, text_encoder).mean()
    after = clip_similarity(guided, RED_PROMPT, image_encoder, text_encoder).mean()
    assert after > before + 0.5
    assert after > 0.7
    red = lambda images: float((class_of(images, means) == 0).float().mean())  # noqa: E731
    assert 0.2 < red(unguided) < 0.8 and red(guided) >= 0.95
