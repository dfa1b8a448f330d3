"""The built-in `digits` model draws the digit asked for (judged by the independent classifier)."""

from __future__ import annotations

import pytest
import torch

import sfumato
from sfumato_data.digits_classifier import load_digits_classifier


@pytest.fixture(autouse=True)
def default_registry():
    sfumato.set_registry(None)
    yield
    sfumato.set_registry(None)


def test_digits_model_draws_the_requested_classes():
    pipe = sfumato.load_pipeline("digits")
    result = pipe(labels=list(range(10)), num_images=2, seed=0, progress=False)
    assert len(result.images) == 20 and result.images[0].size == (16, 16)
    classifier = load_digits_classifier().eval()
    with torch.no_grad():
        predicted = classifier(sfumato.from_pil(result.images)).argmax(dim=1)
    expected = torch.arange(10).repeat_interleave(2)
    # measured: 1.000 accuracy over 500 images with the default guidance (MODEL_CARD.md)
    assert (predicted == expected).float().mean() >= 0.9
