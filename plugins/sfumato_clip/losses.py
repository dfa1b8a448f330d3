"""Contrastive image-text losses.

- ``clip_loss``: CLIP's symmetric InfoNCE (https://arxiv.org/abs/2103.00020, section 2.3) with a
  learnable temperature; the scale is clamped at 100 as in the paper, which keeps training stable.
- ``siglip_loss``: SigLIP's pairwise sigmoid loss (https://arxiv.org/abs/2303.15343, eq. 1).
- ``soft_target_loss``: the loss of the widely used Flickr8k reference implementation
  ("OpenAI CLIP simple implementation", M. Shariatnia), whose targets are a softmax of the
  in-modality similarities instead of the identity; here the targets are detached (see there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_LOGIT_SCALE = math.log(100.0)


def clip_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric cross-entropy over the ``[B, B]`` cosine-similarity matrix, matching pairs on
    the diagonal.

    :param image_embeds: ``[B, E]`` (normalised here). :param text_embeds: ``[B, E]``.
    :param logit_scale: the learnable log scale; ``exp`` of it is clamped at 100.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * image_embeds @ text_embeds.T  # (B_img, B_txt)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """Each image-text pair is an independent binary classification:
    ``-mean_i sum_j log sigmoid(z_ij (t * cos_ij + b))`` with ``z_ij = 1`` on the diagonal and
    -1 elsewhere (SigLIP initialises ``log t = log 10`` and ``b = -10``)."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.T + logit_bias  # (B, B)
    signs = 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def soft_target_loss(image_embeds: Tensor, text_embeds: Tensor, temperature: float = 1.0) -> Tensor:
    """The Flickr8k reference loss, with its soft targets detached.

    ``logits = text @ image.T / temperature`` and the targets are
    ``softmax((image @ image.T + text @ text.T) / 2 * temperature)``: captions of similar images
    share credit, which suits datasets whose captions repeat. Embeddings are used as the
    projection heads return them (not normalised), as in the reference.

    The reference lets gradients flow into the targets as well. The targets are then a second
    output of the same embeddings, and the loss can be lowered by moving the *targets* towards
    the predictions (its gradient w.r.t. the targets is ``-log p``: mass is pulled to wherever
    the model already predicts) instead of moving the predictions towards the targets. That
    self-confirming signal does not reward matching an image with its caption, and it admits
    degenerate fixed points such as all embeddings equal, where targets and predictions are both
    uniform. Detaching makes the targets a fixed teacher for each step, so only the predictions
    move; the loss value is unchanged.
    """
    logits = text_embeds @ image_embeds.T / temperature  # (B_txt, B_img)
    image_similarity = image_embeds @ image_embeds.T
    text_similarity = text_embeds @ text_embeds.T
    targets = F.softmax((image_similarity + text_similarity) / 2 * temperature, dim=-1).detach()
    text_loss = F.cross_entropy(logits, targets, reduction="none")
    image_loss = F.cross_entropy(logits.T, targets.T, reduction="none")
    return ((image_loss + text_loss) / 2).mean()
