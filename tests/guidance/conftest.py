"""Fixtures for the guidance tests: the toy mixture, its trained classifier and a colour CLIP."""

from __future__ import annotations

import pytest
import torch

from guidance.toys import MixtureDenoiser, colour_means, tiny_clip, toy_schedule, train_colour_clip, train_noise_classifier


@pytest.fixture(scope="session")
def schedule():
    return toy_schedule()


@pytest.fixture(scope="session")
def means():
    return colour_means()


@pytest.fixture
def mixture(means, schedule):
    return MixtureDenoiser(means, schedule)


@pytest.fixture(scope="session")
def trained_classifier(means, schedule):
    """A noise-aware red/blue classifier, trained for 100 steps (a few seconds)."""
    state = torch.random.get_rng_state()
    classifier = train_noise_classifier(means, schedule, steps=100)
    torch.random.set_rng_state(state)
    return classifier


@pytest.fixture(scope="session")
def random_clip():
    """Random tiny CLIP towers: ``(image_encoder, text_encoder)``."""
    image, text = tiny_clip()
    return image.requires_grad_(False), text.requires_grad_(False)


@pytest.fixture(scope="session")
def colour_clip(means):
    """Tiny CLIP towers trained (30 steps) to match "a red image" / "a blue image" to red / blue images."""
    state = torch.random.get_rng_state()
    towers = train_colour_clip(means, steps=30)
    torch.random.set_rng_state(state)
    return towers
