"""Built-in models: small models trained by the project's own recipes, shipped with the package,
so ``sfumato generate "a red circle above a blue square"`` works offline on a CPU.

Each model is a folder holding a pipeline spec (``spec.toml``, weights paths relative to it),
float16 safetensors weights, a model card (``MODEL_CARD.md``: data, recipe specs, steps, time,
hardware, evaluation) and the training specs that made it (``train/``).
"""

from __future__ import annotations

from pathlib import Path

import sfumato

SFUMATO_PLUGIN_API = 1

HERE = Path(__file__).parent
MODELS = {
    "shapes": "latent text-to-image of coloured circles, squares and triangles (64x64)",
    "digits": "class-conditional pixel diffusion of handwritten digits 0-9 (16x16)",
}


@sfumato.hookimpl
def register_models(register):
    for name, description in MODELS.items():
        spec = HERE / name / "spec.toml"
        if not spec.is_file():
            raise sfumato.PluginError(f"built-in model {name!r} is missing its spec file {spec}")
        register(name, spec, description=description)
