"""Fine-tuning heads: the projection head a ``train-clip-finetune`` run adds to each tower.

The run saves ``heads.safetensors`` with ``text_head.*``, ``image_head.*`` (one
``ProjectionHead`` each) and ``temperature.log_scale``; a ``clip-text`` / ``clip-image`` encoder
whose spec names the file in ``head`` applies its tower's head to the pooled embedding, so every
CLIP command (classify, search, eval) works in the fine-tuned space. The same keys may also sit
in a full sfumato CLIP file beside ``text.*`` and ``vision.*`` (``sfumato export-clip`` writes
them so), and a transformers folder may hold a ``heads.safetensors`` beside its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch.nn.functional as F
from sfumato import WeightsError, load_into, load_weights
from torch import Tensor, nn

HEADS_FILE = "heads.safetensors"
#: The key prefix of each tower's head in a heads file.
HEAD_PREFIX = {"text": "text_head.", "vision": "image_head."}
TEMPERATURE_KEY = "temperature.log_scale"

Tower = Literal["text", "vision"]


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


def has_heads(state: dict[str, Tensor]) -> bool:
    """Whether a state dict holds fine-tuning heads (``text_head.proj.weight`` and ``image_head.proj.weight``)."""
    return all(f"{prefix}proj.weight" in state for prefix in HEAD_PREFIX.values())


def head_from_state(state: dict[str, Tensor], tower: Tower, source: str) -> ProjectionHead:
    """The ``tower``'s head in eval mode, its widths read from the weights."""
    prefix = HEAD_PREFIX[tower]
    weight = state.get(f"{prefix}proj.weight")
    if weight is None or weight.ndim != 2:
        raise WeightsError(f"{source}: not the heads of a train-clip-finetune run (it has no {prefix}proj.weight "
                           f"matrix); give the {HEADS_FILE} the run wrote")
    head = ProjectionHead(weight.shape[1], weight.shape[0])  # proj: (projection_dim, tower width)
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return load_into(head, picked, source=source).eval()


def load_head(path: str | Path, tower: Tower) -> ProjectionHead:
    """The ``tower``'s head of a heads file (or of a CLIP file holding heads)."""
    return head_from_state(load_weights(path), tower, str(path))


def heads_logit_scale(state: dict[str, Tensor]) -> float | None:
    """The learned log logit scale a heads file records (``temperature.log_scale``), if any."""
    value = state.get(TEMPERATURE_KEY)
    return float(value) if value is not None else None
