"""Helpers of the training tests (tests/training): a tiny labelled, captioned image folder and
tiny-model training specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import sfumato
from sfumato.specs import load_spec

#: Class folder -> base colour; images are that colour plus noise, so colour decides the class.
CLASSES = {"blue": (40, 60, 200), "red": (200, 50, 40)}


def write_class_folder(root: Path, per_class: int = 4, size: int = 16, seed: int = 0) -> Path:
    """``root/<class>/<n>.png``: ``per_class`` noisy solid-colour images per class."""
    rng = np.random.default_rng(seed)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


UNET = {"type": "unet", "block_out_channels": [16, 32], "attention": [False, False], "mid_attention": False,
        "norm_num_groups": 8}
VAE = {"type": "vae-kl", "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
       "latent_channels": 2, "mid_block_attention": False}
CLIP_TEXT = {"type": "clip-text", "architecture": "tiny"}
CLIP_IMAGE = {"type": "clip-image", "architecture": "tiny"}


def train_spec(task: dict[str, Any], root: Path, steps: int = 4, **tables: Any) -> dict[str, Any]:
    """A training spec on the class folder at 16 px with batch 8 (the whole folder: a fixed batch)."""
    train = {"steps": steps, "batch_size": 8, "lr": 1e-3, "log_every": 1, "checkpoint_every": 0, "progress": False,
             "warmup_steps": 0, **tables.pop("train", {})}
    return {"task": task, "dataset": {"type": "imagefolder", "root": str(root), "resolution": 16},
            "train": train, **tables}


def run(spec: dict[str, Any], out: Path, **kwargs: Any) -> sfumato.TrainResult:
    return sfumato.train(load_spec(spec, sfumato.get_registry()), out=out, **kwargs)


def losses(result: sfumato.TrainResult, key: str = "loss") -> list[float]:
    return [record[key] for record in result.metrics]
