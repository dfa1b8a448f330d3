"""Image preprocessing for CLIP: resize, centre crop and the CLIP mean/std normalisation.

Encoders receive images in [-1, 1] (sfumato's convention) and do the rest here, with
differentiable tensor ops so CLIP guidance can take gradients through them. Files are read with
Pillow for the command line tools: ``pixel_values`` equals transformers' ``CLIPImageProcessor``
bit for bit (shorter side to the size with the longer side *truncated*, PIL bicubic, a centre
crop whose offsets round down, rescale by 1/255 computed in float64 then cast to float32, and
``(x - mean) / std`` in float32), so a file embeds exactly as transformers embeds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sfumato
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch import Tensor

# The statistics of OpenAI's CLIP training images (from openai/CLIP's preprocessing).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFileError(sfumato.SfumatoError, ValueError):
    """An image file is missing, is not a file, or cannot be decoded; the message names it."""


def resize_center_crop(images: Tensor, size: int) -> Tensor:
    """Resize ``[B, C, H, W]`` so the shorter side is ``size`` (bicubic, antialiased), then crop
    the centre ``size x size``; a no-op for images already that size."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    short, long = sorted((h, w))
    new_long = int(size * long / short)  # truncated, as transformers and torchvision do
    new_h, new_w = (new_long, size) if h > w else (size, new_long)
    images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[..., top : top + size, left : left + size]


def normalize_for_clip(images: Tensor, size: int) -> Tensor:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, 3, size, size]`` standardised with the CLIP mean/std."""
    images = resize_center_crop((images + 1) / 2, size)
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


#: What Pillow raises for a file that is not an image, or whose data is truncated or corrupt.
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _require_file(path: Path) -> None:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ImageFileError(f"{path}: {what}; give an image file (PNG, JPEG, WebP, ...)")


def check_image_file(path: str | Path) -> Path:
    """``path`` when it is a file whose header Pillow recognises as an image, else an
    ``ImageFileError`` naming it: cheap enough to check every argument before a model loads
    (a truncated file is still only found when it is decoded)."""
    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path):
            pass
    except PILLOW_ERRORS as exc:
        raise ImageFileError(f"{path}: not an image file Pillow can read ({exc})") from exc
    return path


def read_rgb(path: str | Path) -> Image.Image:
    """An image file decoded as RGB; a missing or undecodable file raises ``ImageFileError``."""
    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except PILLOW_ERRORS as exc:
        raise ImageFileError(f"{path}: not a readable image ({exc}); replace or remove the file") from exc


def resize_and_crop(image: Image.Image, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8: the shorter side resized to ``size`` (PIL bicubic; the longer
    side ``int(size * long / short)``, truncated as transformers and torchvision do), then the
    centre crop at ``((h - size) // 2, (w - size) // 2)``, as ``CLIPImageProcessor`` crops."""
    width, height = image.size
    short, long = sorted((width, height))
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    pixels = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return pixels[top : top + size, left : left + size]


def load_image(path: str | Path, size: int) -> Tensor:
    """Read an image file as RGB, resize its shorter side to ``size`` (bicubic) and centre crop:
    ``[3, size, size]`` in [-1, 1]. A missing or undecodable file raises ``ImageFileError``."""
    pixels = torch.from_numpy(resize_and_crop(read_rgb(path), size).astype(np.float32) / 127.5 - 1)  # (H, W, 3)
    return rearrange(pixels, "h w c -> c h w")


def pixel_values(image: str | Path | Image.Image, size: int) -> Tensor:
    """``[3, size, size]`` float32 standardised pixels of an image file (or PIL image), equal bit
    for bit to transformers' ``CLIPImageProcessor`` output; feed them to ``encode_pixels``."""
    rgb = image.convert("RGB") if isinstance(image, Image.Image) else read_rgb(image)
    scaled = (resize_and_crop(rgb, size).astype(np.float64) * (1 / 255)).astype(np.float32)  # (H, W, 3)
    mean, std = np.array(CLIP_MEAN, dtype=np.float32), np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1)))


def image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, by suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ImageFileError(f"{folder}: the image folder {what}; give a folder of images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def file_input(image_encoder: Any, path: str | Path) -> Tensor:
    """One image file as ``image_encoder`` takes it: ``pixel_values`` (transformers'
    preprocessing, exactly) for an encoder with ``encode_pixels`` (``clip-image``), else a
    [-1, 1] image for ``encode``. An unreadable file raises ``ImageFileError``."""
    if hasattr(image_encoder, "encode_pixels"):
        return pixel_values(path, image_encoder.image_size)
    return load_image(path, image_encoder.image_size)


def encode_file_inputs(image_encoder: Any, batch: Tensor) -> Tensor:
    """``[B, E]`` pooled embeddings of a batch of ``file_input`` tensors."""
    encode = getattr(image_encoder, "encode_pixels", image_encoder.encode)
    return encode(batch).pooled
