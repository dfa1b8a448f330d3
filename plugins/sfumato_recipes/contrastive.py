"""Contrastive image-text training pieces: symmetric InfoNCE, a learnable temperature and the
projection head added for fine-tuning."""

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


class ProjectionHead(nn.Module):
    """``LayerNorm(p + dropout(fc(gelu(p))))`` with ``p = proj(x)``: a new embedding space on top
    of a pretrained tower's pooled output (the projection head of the Flickr8k reference
    implementation, "OpenAI CLIP simple implementation", M. Shariatnia)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.proj(x)  # (B, out_dim)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))
