"""``sfumato eval zero-shot``: CLIP zero-shot top-1/top-5 accuracy on a dataset.

Classes and their prompts come from the dataset itself, so a CLIP is asked in the words it was
trained on:

- a labelled dataset (``digits``, ``cifar10``, class folders): one class per label, its prompt the
  caption the dataset gives that label ("a handwritten digit 3", "a photo of a cat");
- ``shapes`` (its single-object scenes): two tasks, the object's **colour** and its **shape**. The
  prompts are the dataset's "a red circle" captions (its vocabulary's ``object_phrase``) for every
  colour and shape seen; a colour's embedding is the normalised mean over shapes ("a red circle",
  "a red square", ...), a shape's the mean over colours: the prompt ensembling of the CLIP paper
  (section 3.1.4).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import sfumato
import torch
import torch.nn.functional as F
from torch import Tensor

from .clip_inputs import add_clip_eval_arguments, image_embeddings, load_encoders
from .commands import print_figures, write_json
from .datasets import dataset_spec, run_dataset, read_items, shapes_vocabulary

#: The metric lives in the core (``sfumato.topk_accuracy``), shared with the recipes' held-out evaluation.
topk_accuracy = sfumato.topk_accuracy


@dataclass
class ZeroShotTask:
    """Images with a true class each, and the prompts of every class."""

    name: str
    images: Tensor  # (N, 3, H, W) in [-1, 1]
    labels: Tensor  # (N,) class indices
    class_names: list[str]
    class_prompts: list[list[str]]


@torch.no_grad()
def class_embeddings(text_encoder: Any, prompts: list[list[str]]) -> Tensor:
    """``[C, E]`` unit-norm class embeddings on the CPU: class ``c``'s is the normalised mean of the
    normalised embeddings of its prompts ``prompts[c]`` (any number per class)."""
    flat = [prompt for group in prompts for prompt in group]
    embeds = F.normalize(text_encoder.encode(flat).pooled, dim=-1)  # (sum of counts, E)
    means = torch.stack([chunk.mean(dim=0) for chunk in embeds.split([len(g) for g in prompts])])  # (C, E)
    return F.normalize(means, dim=-1).float().cpu()


def zero_shot_scores(text_encoder: Any, image_encoder: Any, task: ZeroShotTask,
                     batch_size: int = 256) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``task`` (top-k capped at the number of classes)."""
    weights = class_embeddings(text_encoder, task.class_prompts)  # (C, E)
    logits = image_embeddings(image_encoder, task.images, batch_size) @ weights.T  # (N, C)
    return {**topk_accuracy(logits, task.labels), "images": len(task.labels), "classes": len(task.class_names)}


@dataclass
class ClassLabels:
    """The classes of a set of dataset items, without their images: ``labels [n]`` (class indices)
    of the items at ``rows`` (the items the task uses), the class names and each class's prompts."""

    name: str
    rows: list[int]
    labels: Tensor  # (n,) class indices
    class_names: list[str]
    class_prompts: list[list[str]]

    def task(self, items: list[dict[str, Any]]) -> ZeroShotTask:
        """The ``ZeroShotTask`` of these classes over the images of ``items``."""
        return ZeroShotTask(self.name, torch.stack([items[i]["image"] for i in self.rows]), self.labels,
                            self.class_names, self.class_prompts)


def labelled_classes(items: list[dict[str, Any]], name: str = "label") -> ClassLabels:
    """One class per label; its prompt is the ``caption`` of the first item with that label."""
    if any("label" not in item for item in items):
        raise sfumato.SpecError("zero-shot classification needs items with a 'label' (digits, cifar10, class "
                                "folders) or the shapes dataset; captioned images are for retrieval")
    prompts: dict[int, str] = {}
    for item in items:
        prompts.setdefault(int(item["label"]), item["caption"])
    classes = sorted(prompts)
    if len(classes) < 2:
        raise sfumato.SpecError(f"zero-shot classification needs images of at least two classes; these {len(items)} "
                                f"image(s) are all of class {items[0]['caption']!r}, so every answer would be right")
    index = {label: i for i, label in enumerate(classes)}
    return ClassLabels(name, list(range(len(items))), torch.tensor([index[int(item["label"])] for item in items]),
                       [str(c) for c in classes], [[prompts[c]] for c in classes])


def labelled_task(items: list[dict[str, Any]], name: str = "label") -> ZeroShotTask:
    """``labelled_classes`` with the items' images."""
    return labelled_classes(items, name).task(items)


def shapes_classes(items: list[dict[str, Any]]) -> list[ClassLabels]:
    """The ``color`` and ``shape`` classes of the single-object shapes items (``attributes.objects``)."""
    rows = [i for i, item in enumerate(items) if len(item["attributes"]["objects"]) == 1]
    if not rows:
        raise sfumato.SpecError("no single-object shapes scenes; build the dataset with scenes = ['single']")
    objects = [items[i]["attributes"]["objects"][0] for i in rows]
    colors = sorted({o["color"] for o in objects})
    shapes = sorted({o["shape"] for o in objects})
    phrase = shapes_vocabulary().object_phrase
    colour_prompts = [[phrase(s, c) for s in shapes] for c in colors]
    shape_prompts = [[phrase(s, c) for c in colors] for s in shapes]
    return [
        ClassLabels("color", rows, torch.tensor([colors.index(o["color"]) for o in objects]), colors, colour_prompts),
        ClassLabels("shape", rows, torch.tensor([shapes.index(o["shape"]) for o in objects]), shapes, shape_prompts),
    ]


def shapes_tasks(items: list[dict[str, Any]]) -> list[ZeroShotTask]:
    """The ``color`` and ``shape`` tasks of single-object shapes items (``attributes.objects``)."""
    return [classes.task(items) for classes in shapes_classes(items)]


def run(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset, args.data, zero_shot=True, run=run_dataset(args.weights, args.spec))
    items = read_items(sfumato.build("dataset", spec), args.limit)
    tasks = shapes_tasks(items) if spec["type"] == "shapes" else [labelled_task(items)]
    text_encoder, image_encoder = load_encoders(args)
    results = {task.name: zero_shot_scores(text_encoder, image_encoder, task, args.batch_size) for task in tasks}
    for name, figures in results.items():
        print_figures(f"zero-shot {name} on {spec['type']}", figures)
    if args.out:
        write_json(args.out, {"benchmark": "zero-shot", "dataset": spec, "tasks": results})
    return 0


def add_zero_shot_command(cli: Any) -> None:
    parser = cli.add_parser("zero-shot", help="CLIP zero-shot top-1/top-5 accuracy on a dataset",
                            description="Classify a dataset's images among its classes (for shapes: colour "
                            "and shape separately), with the dataset's captions as prompts.")
    add_clip_eval_arguments(parser)
    parser.set_defaults(handler=run)
