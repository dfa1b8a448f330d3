"""CLIP's contrastive loss, for training loops of your own.

``clip_loss``: CLIP's symmetric InfoNCE (https://arxiv.org/abs/2103.00020, section 2.3) with a
learnable temperature; the scale is clamped at 100 as in the paper, which keeps training stable.
The training recipes' losses (multi-positive InfoNCE, SigLIP, the Flickr8k soft-target loss) are
``sfumato_recipes.contrastive``'s, where ``train-clip`` and ``train-clip-finetune`` use them.
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
