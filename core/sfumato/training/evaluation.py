"""Held-out evaluation during training: what ``Recipe.evaluate`` gets (``EvalContext``), the
held-out counterpart of a run's ``[dataset]``, and the metrics evaluations share.

``[train] eval_every = N`` makes the trainer call ``recipe.evaluate(ctx)`` every N steps and at the
end, on the main process, with the trained modules in eval mode (the EMA's weights when there is
one), gradients off and torch's random generators forked, so that evaluating never changes what
the run trains: a run with evaluation ends with the same weights, bit for bit, as one without, and
resumes as exactly. The returned metrics are written to ``metrics.jsonl`` as ``eval_<name>`` lines
and plotted under the loss in ``loss.png``.

The held-out set is the run's ``[dataset]`` with ``split = "test"`` (else ``"val"``) and no random
crop or flip (a run that trains on that split, or on ``"all"``, is refused: nothing would be held
out); a procedural dataset without splits (``shapes``) gets ``seed + 1`` instead, scenes the run
never trains on. ``[train] eval_size`` caps how many of its examples are read.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SpecError

#: Fields set so that held-out images are read as they are: no random crop, no flip.
DETERMINISTIC_FIELDS = {"crop": "center", "hflip": False}
HELD_OUT_SPLITS = ("test", "val")


def held_out_spec(dataset_spec: Any) -> dict[str, Any]:
    """The held-out counterpart of a ``[dataset]`` spec (a validated spec object) as a dict:
    ``split = "test"`` (else ``"val"``), else ``seed + 1``; deterministic reading where the dataset
    has ``crop`` / ``hflip``. A dataset with neither splits nor a seed raises ``SpecError``."""
    fields = type(dataset_spec).model_fields
    table = dataset_spec.model_dump(mode="json")
    splits = typing.get_args(fields["split"].annotation) if "split" in fields else ()
    split = next((s for s in HELD_OUT_SPLITS if s in splits), None)
    if split is not None:
        if table.get("split") in ("all", split):
            raise SpecError(f"[train] eval_every: [dataset] split = {table.get('split')!r} already holds the {split!r} "
                            f"images, so they are not held out; train on split = \"train\" or set eval_every = 0")
        table["split"] = split
    elif "seed" in fields:
        table["seed"] = int(table["seed"]) + 1
    else:
        raise SpecError(f"[train] eval_every: [dataset] type {dataset_spec.type!r} has no test or val split and no "
                        "seed, so there is no held-out set to evaluate on; set eval_every = 0")
    table.update({k: v for k, v in DETERMINISTIC_FIELDS.items() if k in fields})
    return table


@dataclass
class EvalContext:
    """What ``Recipe.evaluate`` gets.

    :param step: optimiser steps taken so far.
    :param dataset: the held-out dataset (``held_out_spec`` of the run's ``[dataset]``), built once.
    :param count: how many of its examples to read (``[train] eval_size``, at most its length).
    :param batch_size: a batch size for the forwards (the run's per-process micro-batch).
    """

    step: int
    device: torch.device
    dataset: torch.utils.data.Dataset = field(repr=False)
    count: int
    batch_size: int

    def examples(self) -> list[dict[str, Any]]:
        """The first ``count`` held-out examples, as the dataset yields them."""
        return [dict(self.dataset[i]) for i in range(self.count)]


def topk_accuracy(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows of ``logits [N, C]`` whose true class ``targets [N]`` is among the ``k``
    highest scores, as ``{"top1": ..., "top5": ...}`` (k is capped at the number of classes)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, k_max)
    hits = ranked == targets.view(-1, 1)
    return {f"top{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def retrieval_recall(
    image_embeds: Tensor, text_embeds: Tensor, text_to_image: Tensor, ks: tuple[int, ...] = (1, 5, 10),
    texts: list[str] | None = None,
) -> dict[str, float]:
    """Recall@k in both directions for a set where each image has several captions.

    :param image_embeds: ``[N, E]``. :param text_embeds: ``[M, E]``.
    :param text_to_image: ``[M]`` the index of the image each caption describes.
    :param texts: the ``M`` caption texts. With them, a caption matches every image that has a
        caption of the same text, and image-to-text ranks the *distinct* texts (k copies of one
        caption are one answer, not k). Without them every caption is distinct and matches only
        its own image.
    :returns: ``text_to_image@k`` (one of a caption's k nearest images matches it) and
        ``image_to_text@k`` (one of an image's k nearest captions matches it).
    """
    image_embeds, text_embeds = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    text_to_image = text_to_image.to(image_embeds.device)
    texts = texts if texts is not None else [str(j) for j in range(len(text_embeds))]
    distinct: dict[str, int] = {}  # text -> the row of its first occurrence
    for row, text in enumerate(texts):
        distinct.setdefault(text, row)
    column = {text: i for i, text in enumerate(distinct)}
    text_ids = torch.tensor([column[text] for text in texts], device=image_embeds.device)  # (M,)
    first = torch.tensor(list(distinct.values()), device=image_embeds.device)  # (U,)
    has_text = torch.zeros(len(image_embeds), len(distinct), dtype=torch.bool, device=image_embeds.device)  # (N, U)
    has_text[text_to_image, text_ids] = True
    to_texts = image_embeds @ text_embeds[first].T  # (N, U): one column per distinct caption
    to_images = text_embeds @ image_embeds.T  # (M, N)
    caption_has = has_text.T[text_ids]  # (M, N): image n has caption m's text
    results = {}
    for k in ks:
        nearest_images = to_images.topk(min(k, to_images.shape[1]), dim=1).indices  # (M, k)
        results[f"text_to_image@{k}"] = caption_has.gather(1, nearest_images).any(1).float().mean().item()
        nearest_texts = to_texts.topk(min(k, to_texts.shape[1]), dim=1).indices  # (N, k)
        results[f"image_to_text@{k}"] = has_text.gather(1, nearest_texts).any(1).float().mean().item()
    return results
