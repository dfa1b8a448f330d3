"""sfumato_sd: Stable Diffusion 1.x checkpoints load as sfumato pipelines, offline.

``sfumato.load_pipeline(path)`` (and ``sfumato convert``) accept, through the
``spec_from_checkpoint`` hook:

- a diffusers ``StableDiffusionPipeline`` folder (``model_index.json``), see ``diffusers_folder``;
- a diffusers ``StableDiffusionXLPipeline`` folder, see ``sdxl_folder``;
- an SD 1.x single-file ``.safetensors`` checkpoint (LDM keys), see ``single_file``.

The spec refers to the ``unet``, ``vae-kl`` and ``clip-text`` components by name; their plugins
read the weights. The SD 1.x architecture and the CLIP vocabulary ship with the packages, so
nothing is downloaded. See docs/models.md, "Stable Diffusion checkpoints".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sfumato

from .diffusers_folder import spec_from_diffusers_folder
from .scheduler_config import diffusion_table, scheduler_table
from .sdxl_folder import spec_from_sdxl_folder
from .single_file import refuse_pickle, spec_from_single_file
from .template import SD1_SPEC, sd1_template

SFUMATO_PLUGIN_API = 1

__all__ = [
    "SD1_SPEC", "diffusion_table", "scheduler_table", "sd1_template", "spec_from_diffusers_folder",
    "spec_from_single_file", "spec_from_sdxl_folder",
]


def is_sdxl_folder(folder: Path) -> bool:
    """Whether a diffusers folder's ``model_index.json`` names the SDXL text-to-image pipeline."""
    from .diffusers_folder import read_json

    return read_json(folder / "model_index.json").get("_class_name") == "StableDiffusionXLPipeline"


@sfumato.hookimpl
def spec_from_checkpoint(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            return None
        if is_sdxl_folder(path):
            return spec_from_sdxl_folder(path)
        return spec_from_diffusers_folder(path)
    if path.suffix == ".safetensors":
        return spec_from_single_file(path)
    if path.suffix == ".ckpt":
        refuse_pickle(path)
    return None
