"""Package the trained `digits` runs into the plugin: float16 weights plus one pipeline spec per
built-in model of the folder.

    python -m builds.digits.package                  # all three, from the repository root
    python -m builds.digits.package digits-text      # only some

- `digits` (spec.toml): the class-conditional U-Net of runs/digits-unet, CFG 3;
- `digits-text` (text.toml): the digits CLIP (runs/digits-clip, both towers) and the
  text-conditional U-Net (runs/digits-unet-text), CFG 3;
- `digits-guided` (guided.toml): the `digits` U-Net as packaged in spec.toml, run unconditionally
  (CFG scale 0: its null class), steered by the noise-aware classifier of runs/digits-classifier.
  It shares unet.safetensors with `digits`, so package `digits` first when rebuilding both.
- `digits-flow` (flow.toml): the class-conditional DiT trained by flow matching (runs/digits-dit-flow),
  Euler, CFG 2.
"""

from __future__ import annotations

import sys
import tomllib

import torch

from builds.package_model import MODELS, RUNS, package, trained_spec

MODEL = MODELS / "digits"
UNET, UNET_TEXT = RUNS / "digits-unet", RUNS / "digits-unet-text"
DIT_FLOW = RUNS / "digits-dit-flow"
CLIP, CLASSIFIER = RUNS / "digits-clip", RUNS / "digits-classifier"
PIXELS = {"task": {"type": "class-to-image", "height": 16, "width": 16}, "autoencoder": {"type": "identity"}}
SCHEDULER = {"type": "ddim", "steps": 20}
#: Classifier scale of `digits-guided` (eval-guided-*.json beside this file holds the scales measured).
CLASSIFIER_SCALE = 7.0


def note(name: str) -> str:
    return f"The built-in `{name}` model (see MODEL_CARD.md). Written by builds/digits/package.py."


def package_digits() -> int:
    spec = {**PIXELS, "diffusion": trained_spec(UNET)["diffusion"], "scheduler": SCHEDULER,
            "guidance": [{"type": "cfg", "scale": 3.0}]}
    return package(MODEL, spec, {"denoiser": (UNET, "unet.safetensors", {})}, note("digits"))


def package_text() -> int:
    spec = {"task": {"type": "text-to-image", "height": 16, "width": 16}, "autoencoder": {"type": "identity"},
            "diffusion": trained_spec(UNET_TEXT)["diffusion"], "scheduler": SCHEDULER,
            "guidance": [{"type": "cfg", "scale": 3.0}]}
    return package(MODEL, spec, {
        "text_encoder": (CLIP, "text_encoder.safetensors", {"tokenizer": "tokenizer.json"}),
        "image_encoder": (CLIP, "image_encoder.safetensors", {}),
        "denoiser": (UNET_TEXT, "unet-text.safetensors", {}),
    }, note("digits-text"), spec_name="text.toml")


def package_guided() -> int:
    shipped = MODEL / "spec.toml"
    if not shipped.is_file():
        raise SystemExit(f"{shipped} is missing: package `digits` first (digits-guided reuses its U-Net)")
    digits = tomllib.loads(shipped.read_text())
    # CFG at scale 0 is the null-class (unconditional) prediction; the classifier, listed after it,
    # shifts that prediction towards the requested label: classifier guidance alone.
    spec = {**PIXELS, "diffusion": digits["diffusion"], "scheduler": SCHEDULER, "denoiser": digits["denoiser"],
            "guidance": [{"type": "cfg", "scale": 0.0}, {"type": "classifier", "scale": CLASSIFIER_SCALE}]}
    return package(MODEL, spec, {"classifier": (CLASSIFIER, "classifier.safetensors", {})}, note("digits-guided"),
                   spec_name="guided.toml")


def package_flow() -> int:
    # CFG 2: class accuracy 1.000 as at 3, at about half the Frechet distance (eval-flow-cfg*.json)
    spec = {**PIXELS, "diffusion": trained_spec(DIT_FLOW)["diffusion"], "scheduler": {"type": "euler", "steps": 20},
            "guidance": [{"type": "cfg", "scale": 2.0}]}
    return package(MODEL, spec, {"denoiser": (DIT_FLOW, "dit-flow.safetensors", {})}, note("digits-flow"),
                   spec_name="flow.toml")


BUILDERS = {"digits": package_digits, "digits-text": package_text, "digits-guided": package_guided,
            "digits-flow": package_flow}


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BUILDERS]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}", file=sys.stderr)
        return 2
    for name in argv or list(BUILDERS):
        size = BUILDERS[name]()
        print(f"packaged {name} into {MODEL} ({size / 1e6:.2f} MB of new weights)")
    total = sum(f.stat().st_size for f in MODEL.glob("*.safetensors"))
    print(f"{MODEL.name}/ holds {total / 1e6:.1f} MB of weights")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main(sys.argv[1:]))
