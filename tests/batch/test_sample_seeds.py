"""``sfumato.generate(..., seeds=[...])``: each sample's noise comes from its own seed, so a
sample batched with others is the one-sample call with its seed (initial noise, a stochastic
sampler's step noise and inpainting noise alike)."""

from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_test_doubles
from sfumato.generation import ArgumentError, generate

PROMPTS = ["a red circle", "a blue square", "two circles"]


def spec(scheduler: str) -> dict:
    return sfumato_test_doubles.spec_dict(scheduler={"type": scheduler, "steps": 4})


@pytest.fixture(params=["test.ddim", "test.noisy"])
def pipe(request, doubles):
    return sfumato.Pipeline.load(spec(request.param))


def test_a_sample_in_a_batch_is_its_one_sample_call(pipe):
    seeds = [7, 2**64 - 1, 0]
    batched = generate(pipe, PROMPTS, negative_prompt=["", "x", None], seeds=seeds, height=8, width=8,
                       progress=False)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, seeds)):
        alone = generate(pipe, prompt, negative_prompt=["", "x", None][i], seed=seed, height=8, width=8,
                         progress=False)
        torch.testing.assert_close(batched.latents[i:i + 1], alone.latents, rtol=0, atol=1e-6)


def test_without_seeds_the_batch_shares_one_generator(pipe):
    """The per-sample path is opt-in: a plain call still draws every row from ``seed``."""
    batched = generate(pipe, PROMPTS[:2], seed=7, height=8, width=8, progress=False)
    alone = generate(pipe, PROMPTS[1], seed=7, height=8, width=8, progress=False)
    assert not torch.allclose(batched.latents[1:], alone.latents, atol=1e-3)


def test_inpainting_noise_is_per_sample_too(doubles):
    pipe = sfumato.Pipeline.load(spec("test.noisy"))
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    batched = generate(pipe, PROMPTS[:2], seeds=[3, 4], image=image, mask=mask, height=8, width=8, progress=False)
    alone = generate(pipe, PROMPTS[1], seed=4, image=image, mask=mask, height=8, width=8, progress=False)
    torch.testing.assert_close(batched.latents[1:], alone.latents, rtol=0, atol=1e-6)


def test_the_call_lock_does_not_claim_one_seed(pipe):
    result = generate(pipe, PROMPTS[:2], seeds=[3, 4], height=8, width=8, progress=False)
    assert result.lock["arguments"]["latents"] is True  # a replay refuses it: each sample replays alone


@pytest.mark.parametrize("seeds, message", [
    ([1], "1 seeds for 3 samples"),
    ([1, 2, -1], "-1 is out of range"),
    ([1, 2, 2**64], "out of range"),
])
def test_bad_seeds_name_the_argument(pipe, seeds, message):
    with pytest.raises(ArgumentError, match=message) as caught:
        generate(pipe, PROMPTS, seeds=seeds, height=8, width=8, progress=False)
    assert caught.value.argument == "seeds"


def test_seeds_and_latents_are_exclusive(pipe):
    with pytest.raises(ArgumentError, match="seeds or latents"):
        generate(pipe, PROMPTS[:1], seeds=[1], latents=torch.zeros(1, 3, 8, 8), height=8, width=8, progress=False)
