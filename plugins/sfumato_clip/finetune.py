"""The fine-tuning model: pretrained CLIP towers plus new projection heads.

Two training signals share it: a contrastive head for image-caption pairs (Flickr8k-style) and a
classification head that scores images against label prompts ("a photo of a {label}", CIFAR-style).
The towers may be frozen (linear-probe-like, cheap) or trained. Training loops live in the
recipes; this module provides the model and its loss hooks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from sfumato import Encoder
from torch import Tensor, nn

from .losses import MAX_LOGIT_SCALE, clip_loss, siglip_loss, soft_target_loss

CaptionLoss = Literal["clip", "siglip", "soft-target"]


class ProjectionHead(nn.Module):
    """``LayerNorm(x' + dropout(fc(gelu(x'))))`` with ``x' = proj(x)``: the projection head of the
    Flickr8k reference implementation."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.proj(x)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))


class CLIPFineTuner(nn.Module):
    """CLIP encoders with added projection heads into a new ``projection_dim`` space.

    :param text_encoder: a ``clip-text`` encoder (it brings its tokenizer).
    :param image_encoder: a ``clip-image`` encoder (it brings resizing and normalisation).
    :param train_text: fine-tune the text tower; False freezes it (no gradients, less memory).
    :param train_image: the same for the vision tower.
    :param caption_loss: ``clip`` (InfoNCE), ``siglip`` or ``soft-target`` (the Flickr8k loss).
    :param label_template: the prompt each class label is put into for the classification head.
    """

    def __init__(self, text_encoder: Encoder, image_encoder: Encoder, projection_dim: int = 256,
                 train_text: bool = False, train_image: bool = False, dropout: float = 0.1,
                 caption_loss: CaptionLoss = "clip", label_template: str = "a photo of a {}"):
        super().__init__()
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.train_text, self.train_image = train_text, train_image
        text_encoder.requires_grad_(train_text)
        image_encoder.requires_grad_(train_image)
        self.text_head = ProjectionHead(text_encoder.embed_dim, projection_dim, dropout)
        self.image_head = ProjectionHead(image_encoder.embed_dim, projection_dim, dropout)
        self.caption_loss_kind = caption_loss
        self.label_template = label_template
        siglip = caption_loss == "siglip"
        # SigLIP initialises t = 10, b = -10 (https://arxiv.org/abs/2303.15343, section 3.1).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0) if siglip else math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if siglip else None

    def encode_text(self, texts: list[str]) -> Tensor:
        """Captions -> ``[B, projection_dim]``."""
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            pooled = self.text_encoder.encode(texts).pooled
        return self.text_head(pooled)

    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> ``[B, projection_dim]``."""
        with torch.set_grad_enabled(self.train_image and torch.is_grad_enabled()):
            pooled = self.image_encoder.encode(images).pooled
        return self.image_head(pooled)

    def caption_loss(self, images: Tensor, captions: list[str]) -> Tensor:
        """The contrastive loss of ``B`` matching image-caption pairs."""
        image_embeds, text_embeds = self.encode_image(images), self.encode_text(captions)
        if self.caption_loss_kind == "siglip":
            return siglip_loss(image_embeds, text_embeds, self.logit_scale, self.logit_bias)
        if self.caption_loss_kind == "soft-target":
            return soft_target_loss(image_embeds, text_embeds)
        return clip_loss(image_embeds, text_embeds, self.logit_scale)

    def label_logits(self, images: Tensor, label_names: list[str]) -> Tensor:
        """``[B, C]`` scaled cosine similarity of each image to each label prompt."""
        image_embeds = F.normalize(self.encode_image(images), dim=-1)
        prompts = [self.label_template.format(name) for name in label_names]
        label_embeds = F.normalize(self.encode_text(prompts), dim=-1)
        scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        return scale * image_embeds @ label_embeds.T

    def label_loss(self, images: Tensor, labels: Tensor, label_names: list[str]) -> Tensor:
        """Cross-entropy of the label-prompt classifier; ``labels [B]`` index ``label_names``."""
        return F.cross_entropy(self.label_logits(images, label_names), labels.to(images.device))
