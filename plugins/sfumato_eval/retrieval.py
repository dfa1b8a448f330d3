"""``sfumato eval retrieval``: CLIP recall@k, image to text and text to image, over a dataset.

Every image and every caption of the set (``captions``, else ``caption``) is embedded:
text-to-image recall@k counts a caption whose image is among its k nearest images; image-to-text
recall@k counts an image when *any* of its captions is among its k nearest captions.
"""

from __future__ import annotations

import argparse
from typing import Any

import sfumato
import torch
import torch.nn.functional as F
from torch import Tensor

from .clip_inputs import add_clip_eval_arguments, image_embeddings, load_encoders, text_embeddings
from .commands import print_figures, write_json
from .datasets import dataset_spec, read_items


def retrieval_recall(
    image_embeds: Tensor, text_embeds: Tensor, text_to_image: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k in both directions for a set where each image has several captions.

    :param image_embeds: ``[N, E]``. :param text_embeds: ``[M, E]``.
    :param text_to_image: ``[M]`` the index of the image each caption describes.
    :returns: ``text_to_image@k`` (a caption's image is among its k nearest images) and
        ``image_to_text@k`` (any of an image's captions is among its k nearest captions).
    """
    similarity = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T  # (N, M)
    n_images, n_texts = similarity.shape
    owns = text_to_image.view(1, -1) == torch.arange(n_images, device=similarity.device).view(-1, 1)  # (N, M)
    results = {}
    for k in ks:
        nearest_images = similarity.T.topk(min(k, n_images), dim=1).indices  # (M, k)
        results[f"text_to_image@{k}"] = (nearest_images == text_to_image.view(-1, 1)).any(1).float().mean().item()
        nearest_texts = similarity.topk(min(k, n_texts), dim=1).indices  # (N, k)
        results[f"image_to_text@{k}"] = owns.gather(1, nearest_texts).any(1).float().mean().item()
    return results


def retrieval_scores(text_encoder: Any, image_encoder: Any, images: Tensor, captions: list[list[str]],
                     batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways; ``captions[i]`` are the captions of ``images[i]``."""
    texts = [text for group in captions for text in group]
    owner = torch.tensor([i for i, group in enumerate(captions) for _ in group])  # (M,)
    recall = retrieval_recall(image_embeddings(image_encoder, images, batch_size),
                              text_embeddings(text_encoder, texts, batch_size), owner)
    return {**dict(sorted(recall.items(), key=lambda kv: (kv[0].split("@")[0], int(kv[0].split("@")[1])))),
            "images": len(images), "captions": len(texts)}


def retrieval_set(items: list[dict[str, Any]]) -> tuple[Tensor, list[list[str]]]:
    """``(images [N, 3, H, W], captions per image)``: ``captions`` when items have them, else ``caption``."""
    captions = [list(item.get("captions") or [item["caption"]]) for item in items]
    return torch.stack([item["image"] for item in items]), captions


def run(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset, args.data)
    images, captions = retrieval_set(read_items(sfumato.build("dataset", spec), args.limit))
    text_encoder, image_encoder = load_encoders(args)
    results = retrieval_scores(text_encoder, image_encoder, images, captions, args.batch_size)
    print_figures(f"retrieval on {args.dataset}", results)
    if args.out:
        write_json(args.out, {"benchmark": "retrieval", "dataset": spec, **results})
    return 0


def add_retrieval_command(cli: Any) -> None:
    parser = cli.add_parser("retrieval", help="CLIP retrieval recall@1/5/10, image->text and text->image",
                            description="Embed a dataset's images and captions; an image's retrieval "
                            "counts as a hit when any of its captions is among the k nearest.")
    add_clip_eval_arguments(parser)
    parser.set_defaults(handler=run)
