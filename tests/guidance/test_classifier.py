"""Classifier guidance: the score-shift formula, where targets come from, errors, and its effect
on a toy problem (a noise-aware classifier trained in the test on red / blue images)."""

from __future__ import annotations

import pytest
import torch

import sfumato
from guidance.toys import class_of, mixture_batch, sample


def context(schedule, classifier, labels=None) -> sfumato.GuidanceContext:
    return sfumato.GuidanceContext(schedule=schedule, components={"classifier": classifier}, labels=labels)


@pytest.fixture
def random_classifier():
    torch.manual_seed(3)
    return sfumato.build("classifier", {"type": "noise-classifier", "num_classes": 2, "channels": [8, 16]}).eval()


def test_guided_eps_is_eps_minus_scale_sqrt_one_minus_a_grad_log_p(mixture, schedule, random_classifier):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([250.0, 600.0])
    base = sfumato.bind_predictor(mixture, schedule)
    guidance = sfumato.build("guidance", {"type": "classifier", "scale": 4.0})
    with torch.no_grad():
        guided = guidance.wrap(base, context(schedule, random_classifier, torch.tensor([1, 0])))(x, t, sfumato.Conditioning())
        plain = base(x, t, sfumato.Conditioning())
    x_in = x.clone().requires_grad_(True)
    log_p = random_classifier(x_in, t).log_softmax(-1)
    (grad,) = torch.autograd.grad(log_p[0, 1] + log_p[1, 0], x_in)
    a = schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(guided.eps, plain.eps - 4.0 * (1 - a).sqrt() * grad, atol=1e-5, rtol=1e-5)
    # x0 stays consistent with the guided eps at the same x_t
    torch.testing.assert_close(a.sqrt() * guided.x0 + (1 - a).sqrt() * guided.eps, x, atol=1e-4, rtol=1e-4)
    assert (guided.eps - plain.eps).abs().max() > 1e-4


def test_spec_label_overrides_the_run_labels_and_labels_tile_inside_cfg(mixture, schedule, random_classifier):
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 400.0)
    base = sfumato.bind_predictor(mixture, schedule)
    by_spec = sfumato.build("guidance", {"type": "classifier", "scale": 2.0, "label": 1})
    by_run = sfumato.build("guidance", {"type": "classifier", "scale": 2.0})
    with torch.no_grad():
        spec_out = by_spec.wrap(base, context(schedule, random_classifier, torch.tensor([0, 0])))(x, t, sfumato.Conditioning())
        # two run labels, a batch of four: what an inner guidance sees under an outer cfg
        run_out = by_run.wrap(base, context(schedule, random_classifier, torch.tensor([1, 1])))(x, t, sfumato.Conditioning())
    torch.testing.assert_close(spec_out.eps, run_out.eps)


def test_errors_name_what_is_missing(schedule, random_classifier):
    base = sfumato.bind_predictor(lambda x, t, c: x, schedule)
    guidance = sfumato.build("guidance", {"type": "classifier", "scale": 1.0})
    with pytest.raises(ValueError, match=r"needs a \[classifier\] table"):
        guidance.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={}, labels=torch.tensor([0])))
    with pytest.raises(ValueError, match="needs target labels"):
        guidance.wrap(base, context(schedule, random_classifier))
    with pytest.raises(ValueError, match="label 5 is out of range for a classifier with 2 classes"):
        sfumato.build("guidance", {"type": "classifier", "label": 5}).wrap(base, context(schedule, random_classifier))


def test_trained_noise_classifier_reads_noisy_samples(means, schedule, trained_classifier):
    g = torch.Generator().manual_seed(11)
    x0, labels = mixture_batch(means, 256, g)
    t = torch.full((256,), 400.0)
    x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    with torch.no_grad():
        accuracy = (trained_classifier(x_t, t).argmax(1) == labels).float().mean()
    assert accuracy > 0.95


@pytest.mark.parametrize("scheduler", ["ddim", "euler-ancestral"])
def test_classifier_guidance_raises_target_class_accuracy(scheduler, means, mixture, schedule, trained_classifier):
    targets = torch.tensor([0, 1] * 32)  # the run's labels; the denoiser itself is unconditional

    def accuracy(scale: float) -> float:
        guidance = sfumato.build("guidance", {"type": "classifier", "scale": scale})
        out = sample(mixture, schedule, scheduler, [guidance], sfumato.Conditioning(), (64, 3, 8, 8),
                     components={"classifier": trained_classifier}, labels=targets, steps=20, seed=3)
        return float((class_of(out, means) == targets).float().mean())

    unguided, guided = accuracy(0.0), accuracy(3.0)
    assert 0.3 < unguided < 0.7  # the mixture is balanced: a target is hit by chance
    assert guided >= 0.95
    assert guided > unguided + 0.25
