"""``digits``: scikit-learn's bundled handwritten digits (1,797 images of 8 x 8 pixels with 16 grey
levels, no download), upscaled to ``resolution``, with labels 0-9 and captions."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Literal

import numpy as np
import sfumato
import torch
import torch.nn.functional as F
from pydantic import Field

from .splits import split_items

#: Digit -> its English name, for captions ("the digit three").
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 8, 8) float32 in [0, 1], labels (N,) int64)``; ink is 1."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise sfumato.SpecError(
            "[dataset] type = 'digits' needs scikit-learn: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


#: The caption of a digit, ``{}`` standing for it; text-conditional digits models are prompted with it.
CAPTION_TEMPLATE = "a handwritten digit {}"


def digit_caption(label: int) -> str:
    """``"a handwritten digit 3"``."""
    return CAPTION_TEMPLATE.format(label)


class DigitsDataset(sfumato.Dataset):
    """White digits on black (like MNIST), ``[3, H, W]`` in [-1, 1], with ``label`` and ``caption``
    (``"a handwritten digit 3"``) and ``captions`` (also ``"the digit three"``). Digits are never
    flipped (a flipped 3 is not a digit)."""

    #: ``CAPTION_TEMPLATE``, for plugins that prompt for digits (``sfumato eval digits``).
    caption_template: ClassVar[str] = CAPTION_TEMPLATE

    class Spec(sfumato.ComponentSpec):
        type: Literal["digits"] = "digits"
        resolution: int = Field(32, ge=8, description="Side of the square images; the 8 x 8 digits are upscaled.")
        split: Literal["train", "test", "all"] = Field("train", description="Which part of the 1,797 digits.")
        test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the digits held out as the test split.")
        seed: int = Field(0, ge=0, description="Seed of the train/test partition (the same seed, the same split).")
        interpolation: Literal["bilinear", "bicubic"] = Field("bicubic", description="Upscaling filter.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        images, labels = _load_digits()
        indices = list(range(len(labels)))
        if spec.split != "all":
            fractions = {"test": spec.test_fraction, "train": 1 - spec.test_fraction}
            indices = split_items(indices, fractions, spec.split, spec.seed)
        self.labels = labels[indices]
        pixels = torch.from_numpy(images[indices]).unsqueeze(1)  # (N, 1, 8, 8)
        upscaled = F.interpolate(
            pixels, size=(spec.resolution, spec.resolution), mode=spec.interpolation, align_corners=False
        ).clamp(0, 1)
        self.images = upscaled.mul(2).sub(1).expand(-1, 3, -1, -1)  # (N, 3, H, W) in [-1, 1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = int(self.labels[index])
        return {
            "image": self.images[index].clone(),
            "label": label,
            "caption": digit_caption(label),
            "captions": [digit_caption(label), f"the digit {DIGIT_NAMES[label]}"],
        }
