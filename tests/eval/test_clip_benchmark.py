"""``sfumato eval clip-benchmark``: the linear probe against scikit-learn's logistic regression,
known answers for zero-shot and the probes from features built so the answer is known, the
shipped CIFAR-10 prompts, and the command end to end over CIFAR-10, Flickr8k and digits files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sfumato.cli import main
from sfumato_clip import CLIP, save_clip
from sfumato_clip.config import PRESETS
from sfumato_clip_data_helpers import write_cifar10, write_flickr8k
from sfumato_training_helpers import write_class_folder

import sfumato
from sfumato_eval.clip_benchmark import (Embedded, class_sets, classification_scores, parse_dataset, read_prompts,
                                         train_spec)
from sfumato_eval.linear_probe import few_shot_rows, fit_logistic_regression, fit_probe, linear_probe


def blobs(count: int, classes: int = 4, width: int = 16, spread: float = 1.5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=g)
    centres = torch.randn(classes, width, generator=g)
    return F.normalize(centres[labels] + spread * torch.randn(count, width, generator=g), dim=-1), labels


@pytest.mark.parametrize("weight_decay", [1e-4, 1e-2, 1.0])
def test_the_probe_is_scikit_learns_logistic_regression(weight_decay):
    from sklearn.linear_model import LogisticRegression

    features, labels = blobs(300)
    weight, bias = fit_logistic_regression(features, labels, 4, weight_decay)
    reference = LogisticRegression(C=1 / (weight_decay * len(labels)), tol=1e-12, max_iter=20_000)
    reference.fit(features.double().numpy(), labels.numpy())
    assert weight.numpy() == pytest.approx(reference.coef_, abs=1e-4)
    assert bias.numpy() == pytest.approx(reference.intercept_, abs=1e-4)


def test_a_separable_set_is_probed_perfectly_and_the_weight_decay_is_chosen_on_held_out_images():
    features, labels = blobs(200, spread=0.05)
    names = [f"class {i}" for i in labels.tolist()]
    probe = linear_probe(features, names, weight_decays=(1e-4, 1e-2, 1.0))
    assert probe.accuracy(features, names) == 1.0
    assert probe.weight_decay == 1e-2  # 1e-4 and 1e-2 both separate the held-out blobs (1.0 does not): the stronger
    noisy, noisy_labels = blobs(400, spread=3.0, seed=1)
    noisy_names = [str(i) for i in noisy_labels.tolist()]
    assert linear_probe(noisy, noisy_names, weight_decays=(1e-4, 1e3)).weight_decay == 1e-4  # 1e3 predicts a constant


def test_a_probe_scores_a_class_it_never_saw_as_wrong():
    features = torch.eye(3)
    probe = fit_probe(features[:2], ["a", "b"], 1e-3)
    assert probe.accuracy(features, ["a", "b", "c"]) == pytest.approx(2 / 3)


def test_few_shot_draws_k_images_of_each_class_with_its_seed():
    names = ["a"] * 10 + ["b"] * 3 + ["c"] * 7
    rows = few_shot_rows(names, 4, seed=0)
    assert sorted(names[r] for r in rows) == ["a"] * 4 + ["b"] * 3 + ["c"] * 4  # b has only 3
    assert rows == few_shot_rows(names, 4, seed=0) and rows != few_shot_rows(names, 4, seed=1)


class NameText:
    """A prompt naming class ``k`` of ``names`` -> e_k."""

    def __init__(self, names):
        self.names = names

    def encode(self, texts):
        rows = [next(i for i, n in enumerate(self.names) if f" {n}." in f" {t}") for t in texts]
        return SimpleNamespace(pooled=F.one_hot(torch.tensor(rows), len(self.names)).float())


def test_cifar10_is_prompted_with_openais_templates_and_class_names():
    prompts = read_prompts("benchmark")["cifar10"]
    assert prompts["classnames"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"]
    assert len(prompts["templates"]) == 18 and prompts["templates"][1] == "a blurry photo of a {}."
    labels = [3, 5, 3, 9]
    test = Embedded({"type": "cifar10"}, [{"label": k, "caption": f"cifar {k}"} for k in labels],
                    F.one_hot(torch.tensor(labels), 10).float())
    ((classes, source),) = class_sets(test, read_prompts("benchmark"))
    assert source == "benchmark" and len(classes.class_names) == 10  # every class, not only those in the set
    assert classes.class_prompts[3][0] == "a photo of a cat." and len(classes.class_prompts[3]) == 18
    train_labels = [9, 3, 5, 0, 5, 9, 3]
    train = Embedded({"type": "cifar10"}, [{"label": k, "caption": f"cifar {k}"} for k in train_labels],
                     F.one_hot(torch.tensor(train_labels), 10).float())
    scores = classification_scores(NameText(prompts["classnames"]), test, train, read_prompts("benchmark"),
                                   ["zero-shot", "linear-probe", "few-shot"], [1], seed=0)["label"]
    assert scores["prompts"] == "benchmark" and scores["zero-shot"] == {"top1": 1.0, "top5": 1.0}
    assert scores["linear-probe"]["top1"] == 1.0 and scores["few-shot"]["1"]["top1"] == 1.0
    shifted = Embedded(test.spec, test.records, F.one_hot(torch.tensor([(k + 1) % 10 for k in labels]), 10).float())
    wrong = classification_scores(NameText(prompts["classnames"]), shifted, train, read_prompts("benchmark"),
                                  ["zero-shot", "linear-probe"], [], seed=0)["label"]
    assert wrong["zero-shot"]["top1"] == 0.0 and wrong["linear-probe"]["top1"] == 0.0


def test_a_dataset_argument_keeps_the_commas_of_its_values():
    assert parse_dataset("digits") == ("digits", [])
    assert parse_dataset('shapes:length=50,scenes=["single","pair"],seed=2') == \
        ("shapes", ["length=50", 'scenes=["single","pair"]', "seed=2"])


def test_probes_train_on_the_train_split_or_say_why_not():
    assert train_spec({"type": "digits", "split": "test"})[0]["split"] == "train"
    assert train_spec({"type": "shapes", "seed": 1, "length": 10})[0] == {"type": "shapes", "seed": 0, "length": 10}
    spec, why = train_spec({"type": "imagefolder", "root": "x"})
    assert spec is None and "split=val" in why


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    save_clip(CLIP(PRESETS["tiny"]), path)
    return path


def test_one_run_over_cifar10_flickr8k_and_digits(tiny_clip, tmp_path, capsys):
    cifar = write_cifar10(tmp_path / "cifar", per_batch=12, classes=10)
    flickr = write_flickr8k(tmp_path / "flickr")
    classes = write_class_folder(tmp_path / "classes", per_class=6)
    argv = ["eval", "clip-benchmark", "--weights", tiny_clip, "--dataset", f"cifar10:root={cifar}",
            "--dataset", f"flickr8k:root={flickr},resolution=16", "--dataset", "digits",
            "--dataset", f"imagefolder:root={classes},split=val,val_fraction=0.5,resolution=16", "--limit", 20,
            "--train-limit", 40, "--shots", 1, "--shots", 2, "--no-progress", "--out", tmp_path / "r.json",
            "--table", tmp_path / "r.md"]
    assert main([str(a) for a in argv]) == 0
    sfumato.set_registry(None)
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    cifar_entry, flickr_entry, digits_entry, folder_entry = report["datasets"]
    label = cifar_entry["classification"]["label"]
    assert (label["images"], label["classes"], label["prompts"]) == (12, 10, "benchmark")
    assert label["linear-probe"]["train_images"] == 40 and set(label["few-shot"]) == {"1", "2"}
    assert cifar_entry["retrieval"] is None and "retrieval" in cifar_entry["skipped"]
    assert flickr_entry["classification"] == {} and "zero-shot" in flickr_entry["skipped"]
    assert (flickr_entry["retrieval"]["images"], flickr_entry["retrieval"]["captions"]) == (2, 10)
    assert digits_entry["classification"]["label"]["prompts"] == "dataset"
    assert digits_entry["retrieval"]["captions"] == 40  # two captions per digit
    folder = folder_entry["classification"]["label"]
    assert (folder["images"], folder["classes"], folder["linear-probe"]["train_images"]) == (6, 2, 6)
    assert folder_entry["train_dataset"]["split"] == "train" and folder_entry["retrieval"] is None
    table = (tmp_path / "r.md").read_text()
    assert printed.startswith(table) and "| cifar10 | label | 12 | 10 |" in table and "| flickr8k | 2 | 10 |" in table
    assert "flickr8k: zero-shot skipped: the items have no labels" in table
