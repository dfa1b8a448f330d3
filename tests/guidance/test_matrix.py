"""Every guidance type with every first-party scheduler (Heun calls the model twice per step).

The denoiser is the exact mixture denoiser (``toys.MixtureDenoiser``); the classifier and CLIP
towers are tiny random ones. For each pair: the guided sample has the right shape, is finite and
differs from the unguided one, and the neutral setting (scale 1 for cfg, 0 otherwise) gives the
unguided sample bit for bit.
"""

from __future__ import annotations

import pytest
import torch

import sfumato
from guidance.toys import NULL_LABEL, SCHEDULERS, sample

SHAPE = (2, 3, 8, 8)
GUIDANCE = {
    "cfg": ({"type": "cfg", "scale": 4.0, "rescale": 0.5}, {"type": "cfg", "scale": 1.0, "rescale": 0.5}),
    "classifier": ({"type": "classifier", "scale": 5.0, "label": 1}, {"type": "classifier", "scale": 0.0, "label": 1}),
    "clip": ({"type": "clip", "scale": 300.0, "cutouts": 2}, {"type": "clip", "scale": 0.0, "cutouts": 2}),
}


@pytest.fixture(scope="module")
def components(random_clip):
    torch.manual_seed(1)
    classifier = sfumato.build("classifier", {"type": "noise-classifier", "num_classes": 2, "channels": [8, 16]})
    image_encoder, text_encoder = random_clip
    return {"classifier": classifier.eval(), "image_encoder": image_encoder, "text_encoder": text_encoder}


def conditioning(kind: str) -> sfumato.Conditioning:
    if kind != "cfg":
        return sfumato.Conditioning()
    labels = torch.tensor([0, 1])
    return sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, NULL_LABEL)))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("kind", sorted(GUIDANCE))
def test_guidance_with_scheduler(kind, scheduler, mixture, schedule, components):
    active, neutral = (sfumato.build("guidance", spec) for spec in GUIDANCE[kind])
    cond = conditioning(kind)
    run = dict(components=components, prompts=["a red image", "a blue image"], steps=3, seed=7)
    unguided = sample(mixture, schedule, scheduler, [], cond, SHAPE, **run)
    guided = sample(mixture, schedule, scheduler, [active], cond, SHAPE, **run)
    assert guided.shape == SHAPE
    assert torch.isfinite(guided).all()
    assert (guided - unguided).abs().max() > 1e-3
    assert torch.equal(sample(mixture, schedule, scheduler, [neutral], cond, SHAPE, **run), unguided)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_all_three_compose_with_scheduler(scheduler, mixture, schedule, components):
    guidance = [sfumato.build("guidance", GUIDANCE[kind][0]) for kind in ("cfg", "classifier", "clip")]
    out = sample(mixture, schedule, scheduler, guidance, conditioning("cfg"), SHAPE, components=components,
                 prompts=["a red image", "a blue image"], steps=3)
    assert out.shape == SHAPE and torch.isfinite(out).all()
