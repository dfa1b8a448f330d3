"""CLIP evaluations on a dataset: zero-shot top-1/top-5 accuracy and retrieval recall@k.

Zero-shot classes and their prompts come from the dataset itself, so a CLIP is asked in the words
it was trained on:

- a labelled dataset (``digits``, ``cifar10``, class folders): one class per label, its prompt the
  caption the dataset gives that label ("a handwritten digit 3", "a photo of a cat");
- ``shapes`` (its single-object scenes): two tasks, the object's **colour** and its **shape**. The
  prompts are the dataset's "a red circle" captions for every colour and shape seen; a colour's
  embedding is the normalised mean over shapes ("a red circle", "a red square", ...), a shape's
  the mean over colours: the prompt ensembling of the CLIP paper (section 3.1.4).

Retrieval embeds every image and every caption of the set (``captions``, else ``caption``):
text-to-image recall@k counts a caption whose image is among its k nearest images; image-to-text
recall@k counts an image when *any* of its captions is among its k nearest captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sfumato import Encoder, SpecError
from torch import Tensor

from .metrics import retrieval_recall, topk_accuracy
from .zero_shot import ensemble_embeddings


@dataclass
class ZeroShotTask:
    """Images with a true class each, and the prompts of every class."""

    name: str
    images: Tensor  # (N, 3, H, W) in [-1, 1]
    labels: Tensor  # (N,) class indices
    class_names: list[str]
    class_prompts: list[list[str]]


@torch.no_grad()
def image_embeddings(image_encoder: Encoder, images: Tensor, batch_size: int = 256) -> Tensor:
    """``[N, E]`` unit-norm embeddings of ``images [N, 3, H, W]`` in [-1, 1], on the CPU."""
    device = next(image_encoder.parameters()).device if hasattr(image_encoder, "parameters") else "cpu"
    chunks = [image_encoder.encode(images[i : i + batch_size].to(device)).pooled.float().cpu()
              for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


@torch.no_grad()
def text_embeddings(text_encoder: Encoder, texts: list[str], batch_size: int = 256) -> Tensor:
    """``[M, E]`` unit-norm embeddings of ``texts``, on the CPU."""
    chunks = [text_encoder.encode(texts[i : i + batch_size]).pooled.float().cpu()
              for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


def zero_shot_scores(text_encoder: Encoder, image_encoder: Encoder, task: ZeroShotTask,
                     batch_size: int = 256) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``task`` (top-k capped at the number of classes)."""
    weights = ensemble_embeddings(text_encoder, task.class_prompts).float().cpu()  # (C, E)
    logits = image_embeddings(image_encoder, task.images, batch_size) @ weights.T  # (N, C)
    return {**topk_accuracy(logits, task.labels), "images": len(task.labels), "classes": len(task.class_names)}


def retrieval_scores(text_encoder: Encoder, image_encoder: Encoder, images: Tensor, captions: list[list[str]],
                     batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways; ``captions[i]`` are the captions of ``images[i]``."""
    texts = [text for group in captions for text in group]
    owner = torch.tensor([i for i, group in enumerate(captions) for _ in group])  # (M,)
    recall = retrieval_recall(image_embeddings(image_encoder, images, batch_size),
                              text_embeddings(text_encoder, texts, batch_size), owner)
    return {**dict(sorted(recall.items(), key=lambda kv: (kv[0].split("@")[0], int(kv[0].split("@")[1])))),
            "images": len(images), "captions": len(texts)}


def read_items(dataset: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` items of a dataset (all when None); an empty dataset is an error."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise SpecError(f"[dataset] type {dataset.spec.type!r} holds no items to evaluate on")
    return [dataset[i] for i in range(count)]


def labelled_task(items: list[dict[str, Any]], name: str = "label") -> ZeroShotTask:
    """One class per label; its prompt is the ``caption`` of the first item with that label."""
    if any("label" not in item for item in items):
        raise SpecError("zero-shot classification needs items with a 'label' (digits, cifar10, class folders) "
                        "or the shapes dataset; captioned images are for retrieval")
    prompts: dict[int, str] = {}
    for item in items:
        prompts.setdefault(int(item["label"]), item["caption"])
    classes = sorted(prompts)
    if len(classes) < 2:
        raise SpecError(f"zero-shot classification needs images of at least two classes; these {len(items)} "
                        f"image(s) are all of class {items[0]['caption']!r}, so every answer would be right")
    index = {label: i for i, label in enumerate(classes)}
    return ZeroShotTask(name, torch.stack([item["image"] for item in items]),
                        torch.tensor([index[int(item["label"])] for item in items]),
                        [str(c) for c in classes], [[prompts[c]] for c in classes])


def _with_article(words: str) -> str:
    return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"


def shapes_tasks(items: list[dict[str, Any]]) -> list[ZeroShotTask]:
    """The ``color`` and ``shape`` tasks of single-object shapes items (``attributes.objects``)."""
    singles = [item for item in items if len(item["attributes"]["objects"]) == 1]
    if not singles:
        raise SpecError("no single-object shapes scenes; build the dataset with scenes = ['single']")
    objects = [item["attributes"]["objects"][0] for item in singles]
    colors = sorted({o["color"] for o in objects})
    shapes = sorted({o["shape"] for o in objects})
    images = torch.stack([item["image"] for item in singles])
    colour_prompts = [[_with_article(f"{c} {s}") for s in shapes] for c in colors]
    shape_prompts = [[_with_article(f"{c} {s}") for c in colors] for s in shapes]
    return [
        ZeroShotTask("color", images, torch.tensor([colors.index(o["color"]) for o in objects]), colors,
                     colour_prompts),
        ZeroShotTask("shape", images, torch.tensor([shapes.index(o["shape"]) for o in objects]), shapes,
                     shape_prompts),
    ]


def retrieval_set(items: list[dict[str, Any]]) -> tuple[Tensor, list[list[str]]]:
    """``(images [N, 3, H, W], captions per image)``: ``captions`` when items have them, else ``caption``."""
    captions = [list(item.get("captions") or [item["caption"]]) for item in items]
    return torch.stack([item["image"] for item in items]), captions
