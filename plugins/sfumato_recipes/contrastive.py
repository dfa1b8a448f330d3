"""Contrastive image-text training pieces: a learnable temperature and the caption losses,
symmetric InfoNCE (multi-positive), SigLIP's sigmoid loss and the Flickr8k reference's soft-target
loss. (The projection head fine-tuning adds is the clip plugin's: the encoders apply it after
training, so they provide it, ``projection_head``.)"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: CLIP clamps the logit scale at 100 (https://arxiv.org/abs/2103.00020, section 2.5).
MAX_LOG_SCALE = math.log(100.0)


class Temperature(nn.Module):
    """CLIP's learnable log logit scale, initialised to ``log(1 / 0.07)``."""

    def __init__(self, init: float = math.log(1 / 0.07)):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> Tensor:
        return self.log_scale.clamp(max=MAX_LOG_SCALE).exp()


def caption_groups(captions: list[str], device: torch.device | str | None = None) -> Tensor:
    """``[B]`` integer ids, equal for identical captions (``"a red circle"`` twice in a batch)."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(caption, len(ids)) for caption in captions], device=device)


def info_nce(image_embeds: Tensor, text_embeds: Tensor, scale: Tensor,
             groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """CLIP's symmetric InfoNCE over the ``[B, B]`` scaled cosine similarities, matching pairs on
    the diagonal (https://arxiv.org/abs/2103.00020, figure 3), and the in-batch image->text
    retrieval accuracy.

    ``groups`` (``[B]`` ids, :func:`caption_groups`) makes pairs of the same group positives too:
    the target of each row is uniform over its positives (the multi-positive contrastive loss of
    Khosla et al. 2020, https://arxiv.org/abs/2004.11362, and UniCL). Without it, a batch of
    procedural captions with repeats ("a handwritten digit 3" ten times) pushes identical captions
    apart as negatives; with all groups distinct it is exactly the plain loss. A retrieval counts
    as correct when it lands on any positive.
    """
    image_embeds, text_embeds = F.normalize(image_embeds.float(), dim=-1), F.normalize(text_embeds.float(), dim=-1)
    logits = scale * image_embeds @ text_embeds.T  # (B_image, B_text)
    rows = torch.arange(logits.shape[0], device=logits.device)
    if groups is None:
        positive = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    else:
        if groups.shape != rows.shape:
            raise ValueError(f"info_nce: groups has shape {tuple(groups.shape)}, expected ({logits.shape[0]},)")
        positive = groups[:, None] == groups[None, :]  # (B, B), symmetric, true on the diagonal
    targets = positive.float() / positive.sum(dim=1, keepdim=True)  # rows sum to 1
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2
    accuracy = positive[rows, logits.argmax(dim=1)].float().mean()
    return loss, accuracy


def siglip_loss(image_embeds: Tensor, text_embeds: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss (https://arxiv.org/abs/2303.15343, eq. 1): each image-text pair
    is an independent binary classification, ``-mean_i sum_j log sigmoid(z_ij (t * cos_ij + b))``
    with ``z_ij = 1`` on the diagonal and -1 elsewhere; ``scale`` is ``t`` (SigLIP starts at 10)
    and ``bias`` is ``b`` (-10)."""
    image_embeds, text_embeds = F.normalize(image_embeds.float(), dim=-1), F.normalize(text_embeds.float(), dim=-1)
    logits = scale * image_embeds @ text_embeds.T + bias  # (B, B)
    signs = 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def soft_target_loss(image_embeds: Tensor, text_embeds: Tensor, temperature: float = 1.0) -> Tensor:
    """The Flickr8k reference loss ("OpenAI CLIP simple implementation", M. Shariatnia), with its
    soft targets detached.

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


def retrieval_accuracy(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """In-batch image->text retrieval accuracy: the share of images whose nearest caption (cosine)
    is their own."""
    similarity = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
    return (similarity.argmax(dim=1) == torch.arange(len(similarity), device=similarity.device)).float().mean()
