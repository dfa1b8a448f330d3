"""A Stable Diffusion 1.x single-file checkpoint (the original CompVis LDM layout) as a sfumato spec.

    model.diffusion_model.*            the U-Net       -> [denoiser]     unet
    first_stage_model.*                the VAE         -> [autoencoder]  vae-kl
    cond_stage_model.transformer.*     CLIP ViT-L/14   -> [text_encoder] clip-text
    model_ema.*, ...                   ignored

Such a file records no configuration, so the spec is the shipped SD 1.x one (``sd1.toml``)
with the file as every component's weights. The key families tell SD 1.x from its relatives:
SDXL (Stability's SGM layout, below) loads with the shipped ``sdxl.toml``; SD 2.x (an OpenCLIP
text encoder under ``cond_stage_model.model.``) and inpainting / instruct models (more U-Net input
channels) are refused by name.

    model.diffusion_model.*                           the U-Net (label_emb.0: its added embedding)
    first_stage_model.*                               the VAE
    conditioner.embedders.0.transformer.text_model.*  CLIP ViT-L/14 text   -> [text_encoder]
    conditioner.embedders.1.model.*                   OpenCLIP ViT-bigG/14 -> [text_encoder_2] (open_clip layout)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import safe_open

import sfumato

from .template import sd1_template, sdxl_template

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
UNET_INPUT = UNET_PREFIX + "input_blocks.0.0.weight"
#: Key prefixes of related model families, and what they are.
OTHER_FAMILIES = {
    "cond_stage_model.model.": "a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder)",
}
#: The key prefixes of an SDXL base single file's two text encoders (the spec's ``prefix`` fields).
SDXL_TEXT_PREFIXES = {"text_encoder": "conditioner.embedders.0.transformer.",
                      "text_encoder_2": "conditioner.embedders.1.model."}


def read_keys(path: Path) -> tuple[list[str], tuple[int, ...] | None]:
    """The tensor names of a safetensors file and the shape of the U-Net's first convolution,
    without reading any tensor data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            shape = tuple(f.get_slice(UNET_INPUT).get_shape()) if UNET_INPUT in keys else None
    except Exception as exc:  # safetensors raises several types for unreadable files
        raise sfumato.SpecError(f"not a readable safetensors file ({exc})", source=str(path)) from None
    return keys, shape


def spec_from_single_file(path: Path) -> dict[str, Any] | None:
    """The sfumato spec of an SD 1.x single-file ``.safetensors`` checkpoint; None for a file
    with no Stable Diffusion U-Net (another plugin may know it)."""
    path = path.resolve()
    keys, unet_input = read_keys(path)
    if not any(key.startswith(UNET_PREFIX) for key in keys):
        return None
    if any(key.startswith("conditioner.embedders.") for key in keys):
        return spec_from_sdxl_single_file(path, keys, unet_input)
    for prefix, family in OTHER_FAMILIES.items():
        if any(key.startswith(prefix) for key in keys):
            raise sfumato.SpecError(f"this is {family} ({prefix}* keys); sfumato_sd loads Stable Diffusion 1.x",
                                    source=str(path))
    problems = [
        f"no {prefix}* keys: the {what} is missing (a U-Net-only file needs a spec that names the other components)"
        for prefix, what in ((VAE_PREFIX, "autoencoder (VAE)"), (TEXT_PREFIX, "text encoder (CLIP ViT-L/14)"))
        if not any(key.startswith(prefix) for key in keys)
    ]
    if unet_input is not None and unet_input[1] != 4:
        problems.append(f"the U-Net takes {unet_input[1]} input channels (an inpainting or image-conditioned "
                        "model); SD 1.x text-to-image takes 4")
    if problems:
        raise sfumato.SpecError(problems, source=str(path))
    spec = sd1_template()
    for table in ("denoiser", "autoencoder", "text_encoder"):
        spec[table]["weights"] = str(path)
    return spec


def spec_from_sdxl_single_file(path: Path, keys: list[str], unet_input: tuple[int, ...] | None) -> dict[str, Any]:
    """The sfumato spec of an SDXL base single file (the shipped ``sdxl.toml`` with the file as
    every component's weights); a ``SpecError`` lists what makes it something else (the refiner,
    with one OpenCLIP text encoder, or a file missing a component)."""
    problems = [
        f"no {prefix}* keys: the {table.replace('_', ' ')} is missing (SDXL base has two text encoders; the refiner, "
        "with only the second, is not read)"
        for table, prefix in SDXL_TEXT_PREFIXES.items() if not any(key.startswith(prefix) for key in keys)
    ]
    if not any(key.startswith(VAE_PREFIX) for key in keys):
        problems.append(f"no {VAE_PREFIX}* keys: the autoencoder (VAE) is missing")
    if unet_input is not None and unet_input[1] != 4:
        problems.append(f"the U-Net takes {unet_input[1]} input channels (an inpainting or image-conditioned "
                        "model); SDXL text-to-image takes 4")
    if problems:
        raise sfumato.SpecError(problems, source=str(path))
    spec = sdxl_template()
    for table in ("denoiser", "autoencoder", "text_encoder", "text_encoder_2"):
        spec[table]["weights"] = str(path)
    return spec


def refuse_pickle(path: Path) -> None:
    """Pickle checkpoints can run code when loaded; a spec never points at one."""
    raise sfumato.SpecError(
        f"{path.suffix} checkpoints are pickle files, which can run arbitrary code when loaded; sfumato_sd "
        "loads SD 1.x single files as .safetensors (convert it, e.g. with safetensors.torch.save_file after "
        "torch.load(..., weights_only=True))", source=str(path),
    )
