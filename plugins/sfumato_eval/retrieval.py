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
import torch.nn.functional as F
from torch import Tensor

from .clip_inputs import add_clip_eval_arguments, image_embeddings, load_encoders, text_embeddings
from .commands import print_figures, write_json
from .datasets import dataset_spec, run_dataset, read_items


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


def retrieval_scores(text_encoder: Any, image_encoder: Any, images: Tensor, captions: list[list[str]],
                     batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways; ``captions[i]`` are the captions of ``images[i]``."""
    texts = [text for group in captions for text in group]
    owner = torch.tensor([i for i, group in enumerate(captions) for _ in group])  # (M,)
    recall = retrieval_recall(image_embeddings(image_encoder, images, batch_size),
                              text_embeddings(text_encoder, texts, batch_size), owner, texts=texts)
    return {**dict(sorted(recall.items(), key=lambda kv: (kv[0].split("@")[0], int(kv[0].split("@")[1])))),
            "images": len(images), "captions": len(texts)}


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
