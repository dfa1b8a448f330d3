"""Built-in models: small models trained by the project's own recipes, shipped with the package,
so ``sfumato generate "a red circle above a blue square"`` works offline on a CPU.

Each model family is a folder holding pipeline specs (``spec.toml``, and more for variants that
share the folder's weights, such as ``digits/text.toml``; weights paths relative to the spec),
float16 safetensors weights, the tokenizer its text encoder reads, and a model card
(``MODEL_CARD.md``: data, recipe, steps, time, hardware, evaluation). What rebuilds a folder (the
training specs, build scripts and evaluation records) stays in the repository, in
``builds/<family>/``, and is not installed.
"""

from __future__ import annotations

from pathlib import Path

import sfumato

SFUMATO_PLUGIN_API = 1

HERE = Path(__file__).parent
#: name -> (spec file relative to this package, description)
MODELS = {
    "shapes": ("shapes/spec.toml", "latent text-to-image of coloured circles, squares and triangles (64x64)"),
    "digits": ("digits/spec.toml", "class-conditional pixel diffusion of handwritten digits 0-9 (16x16)"),
    "digits-text": ("digits/text.toml", "text-to-image of handwritten digits, 'a handwritten digit 7' (16x16; "
                    "the digits CLIP's text tower, cross-attention U-Net)"),
    "digits-guided": ("digits/guided.toml", "digits 0-9 by classifier guidance alone: the digits U-Net run "
                      "unconditionally, steered by a noise-aware classifier (16x16)"),
    "digits-flow": ("digits/flow.toml", "class-conditional digits 0-9 from a DiT trained by flow matching "
                    "(rectified flow, Euler; 16x16)"),
}


@sfumato.hookimpl
def register_models(register):
    for name, (path, description) in MODELS.items():
        spec = HERE / path
        if not spec.is_file():
            raise sfumato.PluginError(f"built-in model {name!r} is missing its spec file {spec}")
        register(name, spec, description=description)
