"""Package the trained `shapes` runs into the plugin: float16 weights plus the pipeline spec.

    python -m builds.shapes.package        # from the repository root
"""

from __future__ import annotations

import sys

import torch

from builds.package_model import MODELS, RUNS, package, trained_spec

MODEL = MODELS / "shapes"
CLIP, IMAGE = RUNS / "shapes-clip", RUNS / "shapes-clip-image2"
UNET = RUNS / "shapes-unet-extend"


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
    }, note="The built-in `shapes` model (see MODEL_CARD.md). Written by builds/shapes/package.py.")
    print(f"packaged {MODEL} ({size / 1e6:.1f} MB of weights)")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
