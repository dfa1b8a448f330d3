"""The core generation loop, exercised with the test doubles."""

from __future__ import annotations

import pytest
import torch

import sfumato
from sfumato_test_doubles import spec_dict


def load(spec):
    """Build with fixed random weights, so two pipelines of one spec hold the same weights."""
    torch.manual_seed(0)
    return sfumato.load_pipeline(spec)


def test_same_seed_gives_identical_images_and_different_seeds_differ(doubles):
    pipe = load(spec_dict())
    a = pipe("a red circle", seed=7)
    b = pipe("a red circle", seed=7)
    c = pipe("a red circle", seed=8)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)
    assert a.images[0].size == (8, 8) and a.images[0].mode == "RGB"


def test_stochastic_scheduler_noise_comes_from_the_seed(doubles):
    pipe = load(spec_dict(scheduler={"type": "test.noisy", "steps": 4}))
    assert torch.equal(pipe("x", seed=1).latents, pipe("x", seed=1).latents)
    assert not torch.equal(pipe("x", seed=1).latents, pipe("x", seed=2).latents)


def test_prompt_changes_the_image_and_num_images_repeats_it(doubles):
    pipe = load(spec_dict())
    one = pipe("red", seed=0)
    other = pipe("blue", seed=0)
    many = pipe(["red", "blue"], num_images=3, seed=0)
    assert not torch.equal(one.latents, other.latents)
    assert many.latents.shape[0] == 6 and len(many.images) == 6


def test_explicit_latents_replace_the_seeded_noise(doubles):
    pipe = load(spec_dict())
    noise = torch.randn(1, 3, 8, 8)
    assert torch.equal(pipe("x", latents=noise, seed=0).latents, pipe("x", latents=noise, seed=99).latents)
    with pytest.raises(sfumato.SpecError, match="latents have shape"):
        pipe("x", latents=torch.randn(1, 3, 4, 4))


def test_guidance_scale_one_is_unguided(doubles):
    guided = load(spec_dict(guidance=[{"type": "test.cfg", "scale": 1.0}]))
    plain = load(spec_dict(guidance=[]))
    assert torch.equal(guided("x", seed=3).latents, plain("x", seed=3).latents)
    strong = load(spec_dict(guidance=[{"type": "test.cfg", "scale": 5.0}]))
    assert not torch.equal(strong("x", seed=3).latents, plain("x", seed=3).latents)


def test_callback_sees_every_step_and_can_interrupt(doubles):
    pipe = load(spec_dict(scheduler={"type": "test.ddim", "steps": 6}))
    seen = []
    pipe("x", callback=lambda event: seen.append((event.i, event.total)))
    assert seen == [(i, 6) for i in range(6)]

    def stop_after_two(event):
        if event.i == 1:
            raise sfumato.Interrupted
    partial = pipe("x", callback=stop_after_two, seed=0)
    full = pipe("x", seed=0)
    assert not torch.equal(partial.latents, full.latents)


def test_callback_can_replace_the_sample(doubles):
    pipe = load(spec_dict())
    out = pipe("x", callback=lambda event: torch.zeros_like(event.x) if event.i == event.total - 1 else None)
    assert torch.equal(out.latents, torch.zeros_like(out.latents))


def test_inpainting_keeps_the_known_region(doubles):
    pipe = load(spec_dict(guidance=[]))
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, 4:] = 1  # regenerate the right half
    out = pipe("x", image=image, mask=mask, seed=0)
    torch.testing.assert_close(out.latents[..., :4], image[..., :4], atol=1e-5, rtol=0)
    assert not torch.allclose(out.latents[..., 4:], image[..., 4:], atol=1e-2)


def test_mask_of_the_wrong_size_is_an_error(doubles):
    pipe = load(spec_dict())
    with pytest.raises(sfumato.SpecError, match="mask is"):
        pipe("x", image=torch.zeros(1, 3, 8, 8), mask=torch.zeros(1, 1, 4, 4))


def test_image_to_image_strength_runs_part_of_the_trajectory(doubles):
    pipe = load(spec_dict(scheduler={"type": "test.ddim", "steps": 10}))
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    steps = []
    pipe("x", image=image, strength=0.3, callback=lambda e: steps.append(e.i))
    assert len(steps) == 3
    near = pipe("x", image=image, strength=0.1, seed=0).latents
    far = pipe("x", image=image, strength=0.9, seed=0).latents
    assert (near - image).abs().mean() < (far - image).abs().mean()


def test_class_labels_condition_the_denoiser(doubles):
    spec = spec_dict(denoiser={"type": "test.linear", "num_classes": 10}, text_encoder=None)
    del spec["text_encoder"]
    pipe = load(spec)
    assert not torch.equal(pipe(labels=1, seed=0).latents, pipe(labels=2, seed=0).latents)


def test_nan_during_sampling_is_an_error_naming_the_scheduler(doubles):
    pipe = load(spec_dict())
    with torch.no_grad():
        pipe.denoiser.proj.weight.fill_(float("nan"))
    with pytest.raises(sfumato.SamplingError, match="test.ddim.*non-finite"):
        pipe("x")


def test_prompt_without_text_encoder_is_a_clear_error(doubles):
    spec = spec_dict()
    del spec["text_encoder"]
    with pytest.raises(sfumato.SpecError, match=r"\[text_encoder\]"):
        load(spec)("a prompt")


def test_guidance_composes_in_spec_order(doubles):
    order = []

    class Tracer(sfumato.Guidance):
        def __init__(self, name):
            self.name = name

        def wrap(self, predictor, context):
            def traced(x, t, cond):
                order.append(self.name)
                return predictor(x, t, cond)
            return traced

    pipe = load(spec_dict(guidance=[]))
    pipe.guidance = [Tracer("first"), Tracer("second")]
    pipe("x", steps=1)
    # the last guidance wraps the others, so it runs first and calls inward
    assert order == ["second", "first"]
