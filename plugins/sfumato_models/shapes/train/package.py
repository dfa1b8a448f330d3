"""Package the trained `shapes` runs into the plugin: float16 weights plus the pipeline spec.

Reads the resolved specs the harness wrote (``runs/*/trained.toml``), copies each component's
table (architecture included, so the spec says what each file holds), and stores the weights in
float16 (they load into float32 modules; the whole model stays a few MB).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import tomli_w
import torch

import sfumato

ROOT = Path(__file__).resolve().parents[4]
MODEL = Path(__file__).resolve().parents[1]
RUNS = {"clip": ROOT / "runs/shapes-clip", "vae": ROOT / "runs/shapes-vae", "unet": ROOT / "runs/shapes-unet"}
# spec table -> (run, file name in the package)
TABLES = {
    "text_encoder": ("clip", "text_encoder.safetensors"),
    "image_encoder": ("clip", "image_encoder.safetensors"),
    "autoencoder": ("vae", "vae.safetensors"),
    "denoiser": ("unet", "unet.safetensors"),
}


def trained(run: str) -> dict:
    return tomllib.loads((RUNS[run] / "trained.toml").read_text())


def to_float16(source: Path, target: Path) -> None:
    state = sfumato.load_weights(source)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    sfumato.save_weights(half, target, sfumato.read_metadata(source))


def main() -> int:
    unet_run, clip_run = trained("unet"), trained("clip")
    spec = {
        "task": {"type": "text-to-image", "height": 64, "width": 64},
        "diffusion": unet_run["diffusion"],
        "scheduler": {"type": "dpmpp-2m", "steps": 20},
        "guidance": [{"type": "cfg", "scale": 4.0}],
    }
    for table, (run, name) in TABLES.items():
        section = dict((clip_run if run == "clip" else unet_run)[table])
        source = RUNS[run] / Path(section["weights"]).name
        to_float16(source, MODEL / name)
        section["weights"] = name
        if table == "text_encoder":
            section["tokenizer"] = "tokenizer.json"
        spec[table] = section
    header = "# The built-in `shapes` model (see MODEL_CARD.md). Written by train/package.py.\n"
    (MODEL / "spec.toml").write_text(header + tomli_w.dumps(spec))
    total = sum((MODEL / name).stat().st_size for _, name in TABLES.values())
    print(f"packaged {MODEL} ({total / 1e6:.1f} MB of weights)")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
