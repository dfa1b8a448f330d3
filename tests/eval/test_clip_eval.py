"""``sfumato eval zero-shot`` and ``sfumato eval retrieval``: known answers from stand-in "CLIPs"
whose embeddings are built so the right answer is known, and both commands end to end with a
tiny random CLIP on small datasets."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sfumato.cli import main
from sfumato_clip import CLIP, CLIPConfig, TextConfig, VisionConfig, save_clip
from sfumato_data import COLORS, SHAPES, ShapesDataset
from sfumato_eval import ZeroShotTask, detect_shapes, retrieval_recall
from sfumato_eval.datasets import dataset_spec
from sfumato_eval.retrieval import retrieval_scores, retrieval_set
from sfumato_eval.zero_shot import labelled_task, shapes_tasks, zero_shot_scores

CLASSES = 10


def flat_images(classes: list[int]) -> torch.Tensor:
    """``[N, 3, 4, 4]`` images whose every pixel is ``class / 10``: the class can be read back."""
    return torch.tensor(classes, dtype=torch.float32).div(CLASSES).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)


class ClassText:
    """Text "class k" -> the one-hot e_k."""

    def encode(self, texts):
        return SimpleNamespace(pooled=F.one_hot(torch.tensor([int(t.split()[-1]) for t in texts]), CLASSES).float())


class ClassImage:
    """An image of class k -> e_{k + shift} + closeness * e_k: with shift 0 the right class is
    nearest; with shift 1 and closeness 0.5 it is second (top-1 wrong, top-5 right); with closeness
    -1 it is last."""

    def __init__(self, shift: int = 0, closeness: float = 0.0):
        self.shift, self.closeness = shift, closeness

    def encode(self, images):
        k = images[:, 0, 0, 0].mul(CLASSES).round().long()
        pooled = F.one_hot((k + self.shift) % CLASSES, CLASSES).float() + self.closeness * F.one_hot(k, CLASSES)
        return SimpleNamespace(pooled=pooled)


def class_task(classes: list[int]) -> ZeroShotTask:
    return ZeroShotTask("label", flat_images(classes), torch.tensor(classes), [str(c) for c in range(CLASSES)],
                        [[f"class {c}"] for c in range(CLASSES)])


@pytest.mark.parametrize(("image_encoder", "top1", "top5"), [
    (ClassImage(), 1.0, 1.0),
    (ClassImage(shift=1, closeness=0.5), 0.0, 1.0),
    (ClassImage(shift=5, closeness=-1.0), 0.0, 0.0),  # the right class is last
])
def test_zero_shot_accuracy_with_known_embeddings(image_encoder, top1, top5):
    scores = zero_shot_scores(ClassText(), image_encoder, class_task(list(range(CLASSES)) * 2))
    assert (scores["top1"], scores["top5"], scores["images"], scores["classes"]) == (top1, top5, 20, 10)


def test_prompts_of_a_class_are_ensembled():
    """Class 0 is described by "class 0" and "class 5" (its embedding is their normalised mean) and
    class 5 by "class 1": an image of class 0 is classified right, one of class 5 as class 0."""
    task = class_task([0, 5])
    task.class_prompts = [["class 0", "class 5"]] + [[f"class {c}"] for c in range(1, CLASSES)]
    task.class_prompts[5] = ["class 1"]  # class 5's own prompt now points elsewhere
    assert zero_shot_scores(ClassText(), ClassImage(), task)["top1"] == 0.5


class ShapeWordsText:
    """"a red circle" -> e_red + e_circle over the colour and shape vocabulary."""

    words = list(COLORS) + list(SHAPES)

    def encode(self, texts):
        pooled = torch.zeros(len(texts), len(self.words))
        for i, text in enumerate(texts):
            for word in text.split():
                if word in self.words:
                    pooled[i, self.words.index(word)] = 1
        return SimpleNamespace(pooled=pooled)


class ShapeWordsImage:
    """An image -> e_colour + e_shape of the object the shapes detector finds; with
    ``colour_shift`` the colour is misread as the next palette colour."""

    def __init__(self, colour_shift: int = 0):
        self.colour_shift = colour_shift

    def encode(self, images):
        words = ShapeWordsText.words
        pooled = torch.zeros(len(images), len(words))
        for i, image in enumerate(images):
            (found,) = detect_shapes(image)
            colour = list(COLORS)[(list(COLORS).index(found["color"]) + self.colour_shift) % len(COLORS)]
            pooled[i, words.index(colour)] = pooled[i, words.index(found["shape"])] = 1
        return SimpleNamespace(pooled=pooled)


@pytest.fixture(scope="module")
def single_shapes():
    data = ShapesDataset.from_spec({"scenes": ["single"], "length": 60, "seed": 1})
    return [data[i] for i in range(len(data))]


def test_shapes_zero_shot_classifies_colour_and_shape_separately(single_shapes):
    colour, shape = shapes_tasks(single_shapes)
    assert (colour.name, shape.name) == ("color", "shape")
    assert shape.class_names == sorted(SHAPES) and set(colour.class_names) <= set(COLORS)
    assert colour.class_prompts[colour.class_names.index("orange")][0] == "an orange circle"
    assert zero_shot_scores(ShapeWordsText(), ShapeWordsImage(), colour)["top1"] == 1.0
    assert zero_shot_scores(ShapeWordsText(), ShapeWordsImage(), shape)["top1"] == 1.0
    misread = ShapeWordsImage(colour_shift=1)
    assert zero_shot_scores(ShapeWordsText(), misread, colour)["top1"] == 0.0
    assert zero_shot_scores(ShapeWordsText(), misread, shape)["top1"] == 1.0


def test_a_labelled_dataset_gives_one_class_per_label_prompted_by_its_caption():
    items = [{"image": torch.zeros(3, 4, 4), "label": label, "caption": f"a handwritten digit {label}"}
             for label in (3, 1, 3, 7)]
    task = labelled_task(items)
    assert task.class_names == ["1", "3", "7"] and task.labels.tolist() == [1, 0, 1, 2]
    assert task.class_prompts == [["a handwritten digit 1"], ["a handwritten digit 3"], ["a handwritten digit 7"]]
    with pytest.raises(ValueError, match="needs items with a 'label'"):
        labelled_task([{"image": torch.zeros(3, 4, 4), "caption": "x"}])


class LookupText:
    def __init__(self, table):
        self.table = table

    def encode(self, texts):
        return SimpleNamespace(pooled=torch.stack([self.table[t] for t in texts]))


def test_retrieval_counts_any_of_an_images_captions_as_a_hit():
    """Four images e_0..e_3, two captions each: "right i" = e_i, and "near i" = e_{i+1} + 0.5 e_i,
    which lands on the next image first and on its own second."""
    e = torch.eye(CLASSES)
    captions = [[f"right {i}", f"near {i}"] for i in range(4)]
    table = {f"right {i}": e[i] for i in range(4)} | {f"near {i}": e[(i + 1) % 4] + 0.5 * e[i] for i in range(4)}
    images = flat_images([0, 1, 2, 3])
    image_encoder = ClassImage()  # image i -> e_i
    scores = retrieval_scores(LookupText(table), image_encoder, images, captions)
    assert scores["text_to_image@1"] == 0.5 and scores["text_to_image@5"] == 1.0
    assert scores["image_to_text@1"] == 1.0
    assert (scores["images"], scores["captions"]) == (4, 8)
    # Only the "near" captions: image i's nearest caption is "near i-1", its own is second.
    only_near = retrieval_scores(LookupText(table), image_encoder, images, [[f"near {i}"] for i in range(4)])
    assert only_near["image_to_text@1"] == 0.0 and only_near["image_to_text@5"] == 1.0


def test_an_identical_caption_of_another_image_is_a_hit_not_a_miss():
    """Digits-like: six images of three classes, each captioned "digit c"; every image embeds as
    its class and every caption as its class. Matching by row would make image-to-text@1 depend on
    which of the identical captions comes first (at best 1/2 here); by text it is 1."""
    e = torch.eye(CLASSES)
    classes = [0, 0, 1, 1, 2, 2]
    captions = [[f"digit {c}"] for c in classes]
    table = {f"digit {c}": e[c] for c in range(3)}
    scores = retrieval_scores(LookupText(table), ClassImage(), flat_images(classes), captions)
    assert scores["image_to_text@1"] == 1.0 and scores["text_to_image@1"] == 1.0
    image_embeds, text_embeds = e[classes], e[classes]
    by_row = retrieval_recall(image_embeds, text_embeds, torch.arange(6), ks=(1,))
    assert by_row["image_to_text@1"] < 1.0  # the old count: a tie with the other image's caption
    wrong = retrieval_recall(image_embeds, e[[1, 1, 2, 2, 0, 0]], torch.arange(6), ks=(1,),
                             texts=[f"digit {c}" for c in classes])
    assert wrong == {"text_to_image@1": 0.0, "image_to_text@1": 0.0}  # a wrong caption stays wrong


def test_retrieval_set_uses_every_caption_or_the_single_one():
    items = [{"image": torch.zeros(3, 2, 2), "captions": ["a", "b"], "caption": "a"},
             {"image": torch.ones(3, 2, 2), "caption": "c"}]
    images, captions = retrieval_set(items)
    assert images.shape == (2, 3, 2, 2) and captions == [["a", "b"], ["c"]]


def test_dataset_spec_defaults_to_held_out_data_and_reads_options():
    assert dataset_spec("digits", []) == {"type": "digits", "split": "test"}
    assert dataset_spec("shapes", [], zero_shot=True) == {"type": "shapes", "seed": 1, "length": 1000,
                                                          "scenes": ["single"]}
    assert dataset_spec("digits", ["split=all", "resolution=16"]) == {"type": "digits", "split": "all",
                                                                       "resolution": 16}


TINY = CLIPConfig(embed_dim=32, text=TextConfig(width=32, layers=2, heads=4, mlp_width=64),
                  vision=VisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=4, mlp_width=64))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    save_clip(CLIP(TINY), path)
    return str(path)


def test_sfumato_eval_zero_shot_on_digits_and_shapes_with_a_tiny_random_clip(tiny_clip, tmp_path, capsys):
    out = tmp_path / "digits.json"
    assert main(["eval", "zero-shot", "--dataset", "digits", "--limit", "40", "--weights", tiny_clip,
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == {"type": "digits", "split": "test"}
    label = report["tasks"]["label"]
    assert label["images"] == 40 and label["classes"] == 10 and 0 <= label["top1"] <= label["top5"] <= 1

    out = tmp_path / "shapes.json"
    assert main(["eval", "zero-shot", "--dataset", "shapes", "--data", "length=30", "--weights", tiny_clip,
                 "--out", str(out)]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    assert set(tasks) == {"color", "shape"} and tasks["shape"]["classes"] == 3 and tasks["shape"]["top5"] == 1.0
    assert "zero-shot color on shapes" in capsys.readouterr().out


def test_sfumato_eval_retrieval_with_a_tiny_random_clip(tiny_clip, tmp_path, capsys):
    out = tmp_path / "retrieval.json"
    assert main(["eval", "retrieval", "--dataset", "shapes", "--data", "length=20", "--weights", tiny_clip,
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 20 and report["captions"] > 20
    assert {f"{d}@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)} <= set(report)
    assert report["image_to_text@10"] >= report["image_to_text@1"]
    assert "retrieval on shapes" in capsys.readouterr().out


def test_a_malformed_data_option_is_an_error(tiny_clip, capsys):
    assert main(["eval", "retrieval", "--dataset", "digits", "--data", "split", "--weights", tiny_clip]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
