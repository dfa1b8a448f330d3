"""Zero-shot classification: class names become text embeddings, images go to the nearest class.

Each class is described by several prompt templates ("a photo of a {}."); their normalised text
embeddings are averaged and renormalised, the prompt ensembling of the CLIP paper (section 3.1.4),
which is worth a few points of accuracy over a single prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sfumato import Encoder
from torch import Tensor

# A subset of OpenAI's ImageNet prompt templates (openai/CLIP, notebooks/Prompt_Engineering).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "art of the {}.",
)


@torch.no_grad()
def ensemble_embeddings(text_encoder: Encoder, prompts: list[list[str]]) -> Tensor:
    """``[C, E]`` unit-norm class embeddings: class ``c``'s is the normalised mean of the
    normalised embeddings of its prompts ``prompts[c]`` (any number per class)."""
    flat = [prompt for group in prompts for prompt in group]
    embeds = F.normalize(text_encoder.encode(flat).pooled, dim=-1)  # (sum of counts, E)
    means = torch.stack([chunk.mean(dim=0) for chunk in embeds.split([len(g) for g in prompts])])  # (C, E)
    return F.normalize(means, dim=-1)


def class_embeddings(text_encoder: Encoder, labels: list[str], templates: tuple[str, ...] = DEFAULT_TEMPLATES) -> Tensor:
    """``[C, E]`` unit-norm class embeddings: the normalised mean over templates of the
    normalised embeddings of ``template.format(label)``."""
    return ensemble_embeddings(text_encoder, [[template.format(label) for template in templates] for label in labels])


@dataclass
class ClassPrediction:
    """The top-k classes of one image: labels and softmax probabilities, best first."""

    labels: list[str]
    probs: list[float]


#: CLIP clamps its learned logit scale here (https://arxiv.org/abs/2103.00020, section 2.5); the
#: scale of an encoder pair that records none.
MAX_LOGIT_SCALE = 100.0


def learned_logit_scale(*encoders: Encoder) -> float:
    """``exp(logit_scale)`` of the first encoder that records one (``clip-text`` / ``clip-image``
    read it from their weights or run), clamped at 100 as CLIP clamps it; 100 when none does."""
    for encoder in encoders:
        log_scale = getattr(encoder, "logit_scale", None)
        if log_scale is not None:
            return min(math.exp(log_scale), MAX_LOGIT_SCALE)
    return MAX_LOGIT_SCALE


class ZeroShotClassifier:
    """Classifies images among ``labels`` with a CLIP text and image encoder.

    :param templates: prompts with ``{}`` where the label goes, ensembled per class.
    :param logit_scale: multiplies cosine similarities before the softmax. None: the model's
        learned scale (``learned_logit_scale``: about 100 for OpenAI's models, less for a model
        trained briefly), so the probabilities are the model's own.
    """

    def __init__(self, text_encoder: Encoder, image_encoder: Encoder, labels: list[str],
                 templates: tuple[str, ...] = DEFAULT_TEMPLATES, logit_scale: float | None = None):
        if not labels:
            raise ValueError("zero-shot classification needs at least one label")
        slotless = [t for t in templates if "{}" not in t]
        if slotless:
            raise ValueError(f"templates {slotless} have no {{}} where the label goes")
        self.image_encoder = image_encoder
        self.labels = list(labels)
        self.logit_scale = learned_logit_scale(image_encoder, text_encoder) if logit_scale is None else logit_scale
        self.weights = class_embeddings(text_encoder, self.labels, tuple(templates))  # (C, E)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, C]`` scaled cosine similarities."""
        return self.scores(self.image_encoder.encode(images).pooled)

    def scores(self, image_embeds: Tensor) -> Tensor:
        """Image embeddings ``[B, E]`` -> ``[B, C]`` scaled cosine similarities."""
        embeds = F.normalize(image_embeds, dim=-1)  # (B, E)
        return self.logit_scale * embeds @ self.weights.to(embeds).T

    def predict(self, images: Tensor, k: int = 5) -> list[ClassPrediction]:
        """The ``k`` most likely labels of each image."""
        return self.ranked(self.logits(images), k)

    def ranked(self, logits: Tensor, k: int = 5) -> list[ClassPrediction]:
        """The ``k`` most likely labels of each row of ``logits [B, C]``."""
        probs = logits.softmax(dim=-1)
        top = probs.topk(min(k, len(self.labels)), dim=-1)
        return [
            ClassPrediction([self.labels[i] for i in idx.tolist()], p.tolist())
            for p, idx in zip(top.values, top.indices)
        ]
