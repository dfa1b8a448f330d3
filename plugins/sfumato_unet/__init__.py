"""sfumato plugin ``unet``: a configurable U-Net denoiser, from tiny pixel models to the SD 1.x U-Net,
with loaders for diffusers folders and Stable Diffusion 1.x single-file checkpoints."""

from __future__ import annotations

import sfumato

from .diffusers_format import diffusers_config_from_spec, load_diffusers_folder, save_diffusers_folder, spec_from_diffusers_config
from .ldm import unet_state_dict_from_ldm, unet_state_dict_to_ldm
from .model import UNet
from .spec import UNetSpec, unet_config

SFUMATO_PLUGIN_API = 1

__all__ = [
    "UNet", "UNetSpec", "unet_config", "spec_from_diffusers_config", "diffusers_config_from_spec",
    "load_diffusers_folder", "save_diffusers_folder", "unet_state_dict_from_ldm", "unet_state_dict_to_ldm",
]


@sfumato.hookimpl
def register_spec_tables(register):
    register("text_encoder_2", "encoder", description="SDXL's second text encoder (OpenCLIP ViT-bigG/14), read by "
             "U-Nets with addition_embed_type 'text_time' (their addition_text_encoder field names the table)")


@sfumato.hookimpl
def register_components(register):
    register(UNet)
