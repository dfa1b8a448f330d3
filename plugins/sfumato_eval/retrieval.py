"""``sfumato eval retrieval``: CLIP recall@k, image to text and text to image, over a dataset.

Every image and every caption of the set (``captions``, else ``caption``) is embedded:
text-to-image recall@k counts a caption when one of its k nearest images has that caption;
image-to-text recall@k counts an image when one of its k nearest captions is one of its own.
"Has that caption" compares the text, not the row: when several images share a caption ("a
handwritten digit 3" on every 3), retrieving the identical caption of another image, or another
image with the same caption, is right, not a miss.
"""

from __future__ import annotations

import argparse
from typing import Any

import sfumato
import torch
from torch import Tensor

from .clip_inputs import add_clip_eval_arguments, image_embeddings, load_encoders, text_embeddings
from .commands import print_figures, write_json
from .datasets import dataset_spec, run_dataset, read_items

#: The metric lives in the core (``sfumato.retrieval_recall``), shared with the recipes' held-out evaluation.
retrieval_recall = sfumato.retrieval_recall


def retrieval_scores(text_encoder: Any, image_encoder: Any, images: Tensor, captions: list[list[str]],
                     batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways; ``captions[i]`` are the captions of ``images[i]``."""
    return caption_recall(image_embeddings(image_encoder, images, batch_size), text_encoder, captions, batch_size)


def caption_recall(image_embeds: Tensor, text_encoder: Any, captions: list[list[str]],
                   batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways of images already embedded (``image_embeds [N, E]``);
    ``captions[i]`` are the captions of image ``i``."""
    texts = [text for group in captions for text in group]
    owner = torch.tensor([i for i, group in enumerate(captions) for _ in group])  # (M,)
    recall = retrieval_recall(image_embeds, text_embeddings(text_encoder, texts, batch_size), owner, texts=texts)
    return {**dict(sorted(recall.items(), key=lambda kv: (kv[0].split("@")[0], int(kv[0].split("@")[1])))),
            "images": len(image_embeds), "captions": len(texts)}


def retrieval_set(items: list[dict[str, Any]]) -> tuple[Tensor, list[list[str]]]:
    """``(images [N, 3, H, W], captions per image)``: ``captions`` when items have them, else ``caption``."""
    captions = [list(item.get("captions") or [item["caption"]]) for item in items]
    return torch.stack([item["image"] for item in items]), captions


def run(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset, args.data, run=run_dataset(args.weights, args.spec))
    images, captions = retrieval_set(read_items(sfumato.build("dataset", spec), args.limit))
    text_encoder, image_encoder = load_encoders(args)
    results = retrieval_scores(text_encoder, image_encoder, images, captions, args.batch_size)
    print_figures(f"retrieval on {spec['type']}", results)
    if args.out:
        write_json(args.out, {"benchmark": "retrieval", "dataset": spec, **results})
    return 0


def add_retrieval_command(cli: Any) -> None:
    parser = cli.add_parser("retrieval", help="CLIP retrieval recall@1/5/10, image->text and text->image",
                            description="Embed a dataset's images and captions; an image's retrieval "
                            "counts as a hit when one of its captions (by text) is among the k nearest, a caption's "
                            "when one of the k nearest images has it.")
    add_clip_eval_arguments(parser)
    parser.set_defaults(handler=run)
