"""sfumato plugin ``dit``: diffusion transformers (DiT, class-conditional; PixArt-alpha,
text-conditional), weight-compatible with diffusers' ``DiTTransformer2DModel`` and
``PixArtTransformer2DModel`` and loading their folders."""

from __future__ import annotations

import sfumato

from .diffusers_format import diffusers_config_from_spec, load_diffusers_folder, save_diffusers_folder, spec_from_diffusers_config
from .model import DiT
from .spec import DiTSpec

SFUMATO_PLUGIN_API = 1

__all__ = [
    "DiT", "DiTSpec", "spec_from_diffusers_config", "diffusers_config_from_spec", "load_diffusers_folder",
    "save_diffusers_folder",
]


@sfumato.hookimpl
def register_components(register):
    register(DiT)
