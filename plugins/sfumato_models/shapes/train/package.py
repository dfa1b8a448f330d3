"""Package the trained `shapes` runs into the plugin: float16 weights plus the pipeline spec."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sfumato_models.packaging import package, trained_spec

ROOT = Path(__file__).resolve().parents[4]
MODEL = Path(__file__).resolve().parents[1]
CLIP, IMAGE = ROOT / "runs/shapes-clip", ROOT / "runs/shapes-clip-image2"
UNET = ROOT / "runs/shapes-unet-extend"


def main() -> int:
    spec = {
        "task": {"type": "text-to-image", "height": 64, "width": 64},
        "diffusion": trained_spec(UNET)["diffusion"],
        "scheduler": {"type": "dpmpp-2m", "steps": 20},
        "guidance": [{"type": "cfg", "scale": 5.0}],
    }
    size = package(MODEL, spec, {
        "text_encoder": (CLIP, "text_encoder.safetensors", {"tokenizer": "tokenizer.json"}),
        "image_encoder": (IMAGE, "image_encoder.safetensors", {}),
        "autoencoder": (UNET, "vae.safetensors", {}),
        "denoiser": (UNET, "unet.safetensors", {}),
    }, note="The built-in `shapes` model (see MODEL_CARD.md). Written by train/package.py.")
    print(f"packaged {MODEL} ({size / 1e6:.1f} MB of weights)")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
