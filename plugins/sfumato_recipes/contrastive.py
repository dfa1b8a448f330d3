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


def info_nce(image_embeds: Tensor, text_embeds: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """CLIP's symmetric InfoNCE over the ``[B, B]`` scaled cosine similarities, matching pairs on
    the diagonal (https://arxiv.org/abs/2103.00020, figure 3), and the in-batch image->text
    retrieval accuracy."""
    image_embeds, text_embeds = F.normalize(image_embeds.float(), dim=-1), F.normalize(text_embeds.float(), dim=-1)
    logits = scale * image_embeds @ text_embeds.T  # (B_image, B_text)
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return loss, accuracy


class ProjectionHead(nn.Module):
    """``LayerNorm(p + dropout(fc(gelu(p))))`` with ``p = proj(x)``: a new embedding space on top
    of a pretrained tower's pooled output."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.proj(x)  # (B, out_dim)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))
