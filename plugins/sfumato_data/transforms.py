"""Image transforms without torchvision: resize with antialiasing, crops, flips and the
conversion to a ``[3, H, W]`` tensor in [-1, 1].

Random choices draw from torch's global generator, so ``torch.manual_seed`` and the per-worker
seeding of ``torch.utils.data.DataLoader`` make augmentation reproducible.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import sfumato
import torch
from PIL import Image
from pydantic import Field

Crop = Literal["center", "random", "none"]


class ImageDatasetSpec(sfumato.ComponentSpec):
    """Fields shared by the datasets of natural images (CIFAR-10, Flickr8k, image folders)."""

    resolution: int = Field(64, ge=1, description="Side of the square images the dataset yields, in pixels.")
    crop: Crop = Field(
        "center",
        description="After resizing the shorter side to `resolution`: take the center square, a random "
        "square, or 'none' to squash the whole image to a square.",
    )
    hflip: bool = Field(
        False,
        description="Flip each image horizontally with probability 0.5. Captions that say left or right "
        "are not rewritten, so leave this off when they matter.",
    )


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, keeping the aspect ratio. PIL's bicubic filter
    widens its support when shrinking, which is the antialiasing torchvision's ``antialias=True``
    gives."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The centered ``size`` x ``size`` square."""
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def random_crop(image: Image.Image, size: int) -> Image.Image:
    """A ``size`` x ``size`` square at a uniformly random position."""
    width, height = image.size
    left = int(torch.randint(0, width - size + 1, ()).item())
    top = int(torch.randint(0, height - size + 1, ()).item())
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image -> ``[3, H, W]`` float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """The inverse of ``to_tensor``: ``[3, H, W]`` in [-1, 1] -> an RGB image (clamped, rounded)."""
    array = tensor.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), "RGB")


class ImageTransform:
    """Resize, crop and (optionally) flip an image, then convert it to a tensor in [-1, 1].

    :param resolution: side of the output square.
    :param crop: ``center``, ``random`` or ``none`` (squash the whole image to the square).
    :param hflip: flip horizontally with probability 0.5.
    """

    def __init__(self, resolution: int, crop: Crop = "center", hflip: bool = False):
        self.resolution, self.crop, self.hflip = resolution, crop, hflip

    @classmethod
    def from_spec(cls, spec: ImageDatasetSpec) -> ImageTransform:
        return cls(spec.resolution, spec.crop, spec.hflip)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = self.resolution
        if self.crop == "none":
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BICUBIC)
        else:
            image = resize_shorter(image, size)
            image = center_crop(image, size) if self.crop == "center" else random_crop(image, size)
        if self.hflip and bool(torch.rand(()) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)
