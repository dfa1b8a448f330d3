"""A diffusers ``StableDiffusionXLPipeline`` folder as a sfumato spec.

    model_index.json     _class_name StableDiffusionXLPipeline, force_zeros_for_empty_prompt
    unet/                UNet2DConditionModel (addition_embed_type "text_time")  -> [denoiser]       unet
    vae/                 AutoencoderKL (scaling_factor 0.13025)                    -> [autoencoder]    vae-kl
    text_encoder/        CLIPTextModel (CLIP ViT-L/14)                             -> [text_encoder]   clip-text
    text_encoder_2/      CLIPTextModelWithProjection (OpenCLIP ViT-bigG/14)        -> [text_encoder_2] clip-text
    tokenizer/, tokenizer_2/                                                        the encoders' tokenizers
    scheduler/           scheduler_config.json                                     -> [diffusion], [scheduler]

Both text encoders give their penultimate layer's states without the final LayerNorm, which the
U-Net concatenates (the ``unet`` plugin's ``text_time.py``); the second one's projected pooled
state is SDXL's ``text_embeds``. The U-Net's config becomes its ``unet`` table here; the U-Net's
loader checks the options this translation does not look at. The refiner (``StableDiffusionXLImg2ImgPipeline``,
one text encoder and aesthetic-score ids) is not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sfumato

from .diffusers_folder import read_json, unet_table as sd_unet_table, vae_table
from .scheduler_config import diffusion_table, scheduler_table
from .template import SD_STEPS

#: model_index.json entry -> the (library, class) SDXL has there.
COMPONENT_CLASSES = {
    "unet": {("diffusers", "UNet2DConditionModel")},
    "vae": {("diffusers", "AutoencoderKL")},
    "text_encoder": {("transformers", "CLIPTextModel")},
    "text_encoder_2": {("transformers", "CLIPTextModelWithProjection")},
    "tokenizer": {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")},
    "tokenizer_2": {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")},
}
REQUIRED_FILES = {
    "unet": [("config.json",), ("diffusion_pytorch_model.safetensors",)],
    "vae": [("config.json",), ("diffusion_pytorch_model.safetensors",)],
    "text_encoder": [("config.json",), ("model.safetensors",)],
    "text_encoder_2": [("config.json",), ("model.safetensors",)],
    "tokenizer": [("tokenizer.json", "vocab.json")],
    "tokenizer_2": [("tokenizer.json", "vocab.json")],
    "scheduler": [("scheduler_config.json",)],
}
#: diffusers' StableDiffusionXLPipeline default guidance_scale.
SDXL_GUIDANCE_SCALE = 5.0


def check_sdxl_layout(folder: Path, index: dict[str, Any]) -> list[str]:
    """Problems with the component classes and the files of an SDXL folder."""
    problems = []
    for name, accepted in COMPONENT_CLASSES.items():
        entry = tuple(index.get(name) or (None, None))
        if entry not in accepted:
            problems.append(f"model_index.json: {name} is {list(entry)}; a StableDiffusionXLPipeline (SDXL) has "
                            f"{list(sorted(accepted)[0])}")
    for sub, files in REQUIRED_FILES.items():
        if not (folder / sub).is_dir():
            problems.append(f"sub-folder {sub}/ is missing")
            continue
        for choices in files:
            if not any((folder / sub / f).is_file() for f in choices):
                problems.append(f"{sub}/{' or '.join(choices)} is missing")
    return problems


def text_encoder_table(folder: Path, encoder: str, tokenizer: str) -> dict[str, Any]:
    """A ``clip-text`` table reading SDXL's way: penultimate states, no final LayerNorm."""
    return {"type": "clip-text", "layer": "penultimate", "final_norm": False,
            "weights": str(folder / encoder), "tokenizer": str(folder / tokenizer)}


def unet_table(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``unet`` table of an SDXL ``UNet2DConditionModel`` config."""
    if config.get("addition_embed_type") != "text_time":
        raise sfumato.SpecError(f"addition_embed_type is {config.get('addition_embed_type')!r}; an SDXL U-Net has "
                                "'text_time'", source=source)
    layers = config.get("transformer_layers_per_block", 1)
    return {
        **sd_unet_table(config),
        "linear_projection": bool(config.get("use_linear_projection", False)),
        "transformer_layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": config.get("addition_time_embed_dim"),
        "projection_class_embeddings_input_dim": config.get("projection_class_embeddings_input_dim"),
    }


def spec_from_sdxl_folder(folder: Path) -> dict[str, Any]:
    """The sfumato spec of an SDXL diffusers pipeline folder, with absolute weights paths; a
    ``SpecError`` lists everything that makes it something else."""
    folder = folder.resolve()
    index = read_json(folder / "model_index.json")
    problems = check_sdxl_layout(folder, index)
    if problems:
        raise sfumato.SpecError(problems, source=str(folder))
    unet = read_json(folder / "unet" / "config.json")
    vae = read_json(folder / "vae" / "config.json")
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    scheduler_source = str(folder / "scheduler" / "scheduler_config.json")
    denoiser = unet_table(unet, str(folder / "unet" / "config.json"))
    denoiser.update(weights=str(folder / "unet"),
                    force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)))
    autoencoder = {**vae_table(vae, str(folder / "vae" / "config.json")), "weights": str(folder / "vae")}
    spec: dict[str, Any] = {
        "task": {"type": "text-to-image"},
        "text_encoder": text_encoder_table(folder, "text_encoder", "tokenizer"),
        "text_encoder_2": text_encoder_table(folder, "text_encoder_2", "tokenizer_2"),
        "denoiser": denoiser,
        "autoencoder": autoencoder,
        "diffusion": diffusion_table(scheduler, scheduler_source),
        "scheduler": {**scheduler_table(scheduler, scheduler_source), "steps": SD_STEPS},
        "guidance": [{"type": "cfg", "scale": SDXL_GUIDANCE_SCALE}],
    }
    if denoiser.get("sample_size"):
        size = denoiser["sample_size"] * 2 ** (len(autoencoder["block_out_channels"]) - 1)
        spec["task"].update(height=size, width=size)
    return spec
