"""Package the trained `digits` run into the plugin: float16 weights plus the pipeline spec."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sfumato_models.packaging import package, trained_spec

ROOT = Path(__file__).resolve().parents[4]
MODEL = Path(__file__).resolve().parents[1]
UNET = ROOT / "runs/digits-unet"


def main() -> int:
    spec = {
        "task": {"type": "class-to-image", "height": 16, "width": 16},
        "autoencoder": {"type": "identity"},
        "diffusion": trained_spec(UNET)["diffusion"],
        "scheduler": {"type": "ddim", "steps": 20},
        "guidance": [{"type": "cfg", "scale": 3.0}],
    }
    size = package(MODEL, spec, {"denoiser": (UNET, "unet.safetensors", {})},
                   note="The built-in `digits` model (see MODEL_CARD.md). Written by train/package.py.")
    print(f"packaged {MODEL} ({size / 1e6:.1f} MB of weights)")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
