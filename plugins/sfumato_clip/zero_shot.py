"""Zero-shot classification: class names become text embeddings, images go to the nearest class.

Each class is described by several prompt templates ("a photo of a {}."); their normalised text
embeddings are averaged and renormalised, the prompt ensembling of the CLIP paper (section 3.1.4),
which is worth a few points of accuracy over a single prompt.
"""

from __future__ import annotations

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


class ZeroShotClassifier:
    """Classifies images among ``labels`` with a CLIP text and image encoder.

    :param logit_scale: multiplies cosine similarities before the softmax; trained CLIPs learn
        about 100 (their clamp), which is the default.
    """

    def __init__(self, text_encoder: Encoder, image_encoder: Encoder, labels: list[str],
                 templates: tuple[str, ...] = DEFAULT_TEMPLATES, logit_scale: float = 100.0):
        if not labels:
            raise ValueError("zero-shot classification needs at least one label")
        self.image_encoder = image_encoder
        self.labels = list(labels)
        self.logit_scale = logit_scale
        self.weights = class_embeddings(text_encoder, self.labels, tuple(templates))  # (C, E)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, C]`` scaled cosine similarities."""
        embeds = F.normalize(self.image_encoder.encode(images).pooled, dim=-1)  # (B, E)
        return self.logit_scale * embeds @ self.weights.to(embeds).T

    def predict(self, images: Tensor, k: int = 5) -> list[ClassPrediction]:
        """The ``k`` most likely labels of each image."""
        probs = self.logits(images).softmax(dim=-1)
        top = probs.topk(min(k, len(self.labels)), dim=-1)
        return [
            ClassPrediction([self.labels[i] for i in idx.tolist()], p.tolist())
            for p, idx in zip(top.values, top.indices)
        ]
