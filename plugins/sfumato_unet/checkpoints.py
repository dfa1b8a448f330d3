"""Recognise the format of a U-Net weights path and read it in sfumato's parameter names."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

import sfumato

from .diffusers_format import load_diffusers_folder, rename_legacy_attention_keys
from .ldm import LDM_PREFIX, unet_state_dict_from_ldm
from .spec import UNetSpec


def read_unet_weights(path: str | Path, spec: UNetSpec) -> dict[str, Tensor]:
    """A diffusers folder, an SD 1.x single-file checkpoint (``model.diffusion_model.*`` keys)
    or a plain sfumato/diffusers safetensors file. Pickle files are refused (convert them first)."""
    if Path(path).is_dir():
        return load_diffusers_folder(path)[1]
    state_dict = sfumato.load_weights(path)
    if any(key.startswith(LDM_PREFIX) for key in state_dict):
        return unet_state_dict_from_ldm(state_dict, spec)
    return rename_legacy_attention_keys(state_dict)
