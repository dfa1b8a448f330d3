"""``sfumato eval digits``: the shipped classifier, the Frechet distance (closed forms, scipy, real
vs real and real vs noise) and the command end to end with tiny random class- and text-conditional
models."""

from __future__ import annotations

import json

import pytest
import sfumato
import torch

from sfumato.cli import main
from sfumato_data import DigitsDataset
from sfumato_eval.digits import check_template, classifier_features, evaluate_digits, generate_digits
from sfumato_eval.digits_classifier import WEIGHTS, accuracy, load_digits_classifier, train_digits_classifier
from sfumato_eval.frechet import feature_frechet_distance, frechet_distance, gaussian_statistics


@pytest.fixture(scope="module")
def classifier():
    return load_digits_classifier()


@pytest.fixture(scope="module")
def test_digits():
    data = DigitsDataset.from_spec({"split": "test"})
    return data.images, torch.from_numpy(data.labels)


def test_the_shipped_classifier_is_accurate_on_real_test_digits(classifier, test_digits):
    images, labels = test_digits
    assert accuracy(classifier, images, labels) >= 0.95
    recorded = json.loads(sfumato.read_metadata(WEIGHTS)["sfumato.digits_classifier"])
    assert recorded["test_accuracy"] >= 0.97 and recorded["retrain"] == "python -m sfumato_eval.digits_classifier"
    assert WEIGHTS.stat().st_size < 300_000


def test_the_classifier_reads_any_size_and_one_or_three_channels(classifier, test_digits):
    images, _ = test_digits
    small = torch.nn.functional.interpolate(images[:8], size=(16, 16), mode="bilinear", antialias=True)
    assert torch.equal(classifier(images[:8]).argmax(-1), classifier(small[:, :1]).argmax(-1))


def test_a_short_training_run_already_classifies_well():
    """The recipe (the full one is 30 epochs, ~7 s on one core) at a fifth of its length (0.958)."""
    _, test_accuracy = train_digits_classifier(epochs=6)
    assert test_accuracy >= 0.9


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_accuracy():
    _, test_accuracy = train_digits_classifier()
    recorded = json.loads(sfumato.read_metadata(WEIGHTS)["sfumato.digits_classifier"])
    assert test_accuracy >= 0.97 and test_accuracy == pytest.approx(recorded["test_accuracy"], abs=0.01)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    """For diagonal covariances, d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    mean_1, mean_2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var_1, var_2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mean_1, torch.diag(var_1), mean_2, torch.diag(var_2)) == pytest.approx(expected)
    assert frechet_distance(mean_1, torch.diag(var_1), mean_1, torch.diag(var_1)) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 6, generator=g, dtype=torch.float64), torch.randn(150, 6, generator=g, dtype=torch.float64)
    b = b @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    (m1, c1), (m2, c2) = gaussian_statistics(a), gaussian_statistics(b)
    root = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    expected = ((m1 - m2) ** 2).sum().item() + c1.trace().item() + c2.trace().item() - 2 * root.trace()
    assert feature_frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_real_vs_real_is_small_and_real_vs_noise_large(classifier):
    real = DigitsDataset.from_spec({"split": "all"}).images
    features, _ = classifier_features(classifier, real)
    halves = feature_frechet_distance(features[0::2], features[1::2])
    noise = torch.rand(len(real) // 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_features, _ = classifier_features(classifier, noise)
    to_noise = feature_frechet_distance(features[0::2], noise_features)
    assert halves < 10 and to_noise > 50 * halves


def test_real_test_digits_with_their_labels_score_as_a_perfect_generator_would(test_digits):
    images, labels = test_digits
    report = evaluate_digits(images, labels)
    assert report["accuracy"] >= 0.95 and min(report["per_class_accuracy"].values()) >= 0.85
    assert report["frechet_distance"] == pytest.approx(0, abs=1e-6)  # the same images as the reference
    assert 0 < report["real_train_vs_test_frechet_distance"] < 20
    shuffled = evaluate_digits(images, (labels + 1) % 10)
    assert shuffled["accuracy"] < 0.05 and shuffled["frechet_distance"] == report["frechet_distance"]


def test_sfumato_eval_digits_runs_end_to_end_with_a_tiny_random_pipeline(example_spec, tmp_path, capsys):
    out = tmp_path / "digits.json"
    code = main(["eval", "digits", "--spec", example_spec("tiny-pixel-classes"), "--set", "scheduler.steps=2",
                 "--per-class", "3", "--seed", "5", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "class accuracy" in printed and "Frechet distance to 359 real test digits" in printed
    report = json.loads(out.read_text())
    assert report["generated"] == 30 and report["per_class"] == 3 and report["seed"] == 5
    assert set(report["per_class_accuracy"]) == {str(c) for c in range(10)}
    assert 0.0 <= report["accuracy"] <= 1.0
    # Random weights draw noise, far from real digits.
    assert report["frechet_distance"] > 10 * report["real_train_vs_test_frechet_distance"]


def test_sfumato_eval_digits_takes_a_built_in_model_by_name(example_spec, tmp_path, monkeypatch, capsys):
    (tmp_path / "acme_digits.py").write_text(
        "import sfumato\nSFUMATO_PLUGIN_API = 1\n"
        "@sfumato.hookimpl\ndef register_models(register):\n"
        f"    register('acme.digits', {example_spec('tiny-pixel-classes')!r}, description='tiny random digits')\n"
    )
    (tmp_path / "registry.toml").write_text('[plugins]\nacme = "acme_digits"\n')
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["eval", "digits", "--model", "acme.digits", "--set", "scheduler.steps=1", "--per-class", "1",
                     "--out", "digits.json", "--no-progress"]) == 0
        report = json.loads((tmp_path / "digits.json").read_text())
        assert report["model"] == "acme.digits" and report["generated"] == 10
        assert report["overrides"] == ["scheduler.steps=1"]  # the JSON says how the figures were made
        assert main(["eval", "digits", "--model", "nope"]) == 2
        assert "unknown model 'nope'" in capsys.readouterr().err
    finally:
        sfumato.set_registry(None)


class _DrawsRealDigits:
    """A stand-in text-to-image pipeline that draws a real test digit of the digit its prompt names
    (the last word), and records the prompts it was given."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels, self.prompts = images, labels, []

    def __call__(self, prompt, seed, num_images, progress):
        self.prompts.append(prompt)
        chosen = self.images[self.labels == int(prompt.split()[-1])][:num_images]
        return sfumato.GenerationResult(images=sfumato.to_pil(chosen), latents=chosen, seed=seed)


def test_a_text_conditional_model_is_asked_for_each_digit_by_prompt(test_digits):
    images, labels = test_digits
    pipe = _DrawsRealDigits(images, labels)
    generated, asked = generate_digits(pipe, per_class=3, template="a handwritten digit {}", progress=False)
    assert pipe.prompts == [f"a handwritten digit {c}" for c in range(10)]
    assert asked.tolist() == [c for c in range(10) for _ in range(3)]
    assert evaluate_digits(generated, asked)["accuracy"] >= 0.9  # real digits of the prompted class


@pytest.mark.parametrize("template", ["a handwritten digit", "digit {} or {}", "digit {0}", "a {} {name}"])
def test_a_prompt_template_must_name_the_digit_once(template):
    with pytest.raises(sfumato.SpecError, match="exactly once"):
        check_template(template)


def test_sfumato_eval_digits_prompts_a_text_to_image_model_with_the_dataset_caption(example_spec, tmp_path, capsys):
    spec = example_spec("tiny-text-to-image")
    out = tmp_path / "digits.json"
    assert main(["eval", "digits", "--spec", spec, "--set", "scheduler.steps=1", "--per-class", "1",
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["prompt"] == "a handwritten digit {}" and report["generated"] == 10
    # an explicit template; a class-conditional model is asked by label unless one is given
    assert main(["eval", "digits", "--spec", spec, "--set", "scheduler.steps=1", "--per-class", "1",
                 "--prompt", "the digit {}", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["prompt"] == "the digit {}"
    assert main(["eval", "digits", "--spec", example_spec("tiny-pixel-classes"), "--set", "scheduler.steps=1",
                 "--per-class", "1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["prompt"] is None
    capsys.readouterr()
    assert main(["eval", "digits", "--spec", spec, "--prompt", "a handwritten digit", "--no-progress"]) == 2
    assert "exactly once" in capsys.readouterr().err
