"""Evaluation metrics for CLIP: top-k classification accuracy and retrieval recall@k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def topk_accuracy(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows of ``logits [N, C]`` whose true class ``targets [N]`` is among the ``k``
    highest scores, as ``{"top1": ..., "top5": ...}`` (k is capped at the number of classes)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, k_max)
    hits = ranked == targets.view(-1, 1)
    return {f"top{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}


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
