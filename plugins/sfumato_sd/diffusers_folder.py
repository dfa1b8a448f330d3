"""A diffusers ``StableDiffusionPipeline`` folder (``save_pretrained``, or a Hugging Face download)
as a sfumato spec.

    model_index.json              _class_name StableDiffusionPipeline
    unet/        config.json + diffusion_pytorch_model.safetensors   -> [denoiser]     unet
    vae/         config.json + diffusion_pytorch_model.safetensors   -> [autoencoder]  vae-kl
    text_encoder/ config.json + model.safetensors                    -> [text_encoder] clip-text
    tokenizer/   tokenizer.json, or vocab.json + merges.txt          -> [text_encoder] tokenizer
    scheduler/   scheduler_config.json                               -> [diffusion], [scheduler]

The U-Net and VAE configs become Spec fields here; every loader then reads its own folder (and
the U-Net's loader checks the options this translation does not look at). Only SD 1.x is
accepted: SD 2.x, SDXL and inpainting folders are named as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sfumato

from .scheduler_config import diffusion_table, scheduler_table
from .template import SD_STEPS, sd1_template

#: model_index.json entry -> the (library, class) SD 1.x has there.
COMPONENT_CLASSES = {
    "unet": {("diffusers", "UNet2DConditionModel")},
    "vae": {("diffusers", "AutoencoderKL")},
    "text_encoder": {("transformers", "CLIPTextModel")},
    "tokenizer": {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")},
}
#: Files each sub-folder must hold (any one of a tuple).
REQUIRED_FILES = {
    "unet": [("config.json",), ("diffusion_pytorch_model.safetensors",)],
    "vae": [("config.json",), ("diffusion_pytorch_model.safetensors",)],
    "text_encoder": [("config.json",), ("model.safetensors",)],
    "tokenizer": [("tokenizer.json", "vocab.json")],
    "scheduler": [("scheduler_config.json",)],
}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a config file of the folder; malformed text or another top level is an error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise sfumato.SpecError(f"malformed JSON: {exc.msg} (line {exc.lineno})", source=str(path)) from None
    except UnicodeDecodeError:
        raise sfumato.SpecError("not UTF-8 text", source=str(path)) from None
    if not isinstance(data, dict):
        raise sfumato.SpecError(f"expected a JSON object, found {type(data).__name__}", source=str(path))
    return data


def check_layout(folder: Path, index: dict[str, Any]) -> list[str]:
    """Problems with the pipeline class, the component classes and the files of an SD 1.x folder."""
    class_name = index.get("_class_name")
    if class_name not in ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline"):
        family = "Stable Diffusion XL" if "XL" in str(class_name) else "not a text-to-image SD 1.x pipeline"
        return [f"model_index.json: _class_name is {class_name!r} ({family}); sfumato_sd loads "
                "'StableDiffusionPipeline' and 'StableDiffusionInpaintPipeline' folders of Stable Diffusion 1.x"]
    problems = []
    for name, accepted in COMPONENT_CLASSES.items():
        entry = tuple(index.get(name) or (None, None))
        if entry not in accepted:
            problems.append(f"model_index.json: {name} is {list(entry)}; SD 1.x has {list(sorted(accepted)[0])}")
    for sub, files in REQUIRED_FILES.items():
        if not (folder / sub).is_dir():
            problems.append(f"sub-folder {sub}/ is missing")
            continue
        for choices in files:
            if not any((folder / sub / f).is_file() for f in choices):
                pickle = (folder / sub / choices[0]).with_suffix(".bin")
                hint = f" ({pickle.name} is there: pickle weights are not loaded, convert them to safetensors)" \
                    if pickle.is_file() and choices[0].endswith(".safetensors") else ""
                problems.append(f"{sub}/{' or '.join(choices)} is missing{hint}")
    if (folder / "tokenizer").is_dir() and (folder / "tokenizer" / "vocab.json").is_file() \
            and not (folder / "tokenizer" / "tokenizer.json").is_file() \
            and not (folder / "tokenizer" / "merges.txt").is_file():
        problems.append("tokenizer/merges.txt is missing (vocab.json needs it)")
    return problems


def check_sd1_unet(unet: dict[str, Any], text: dict[str, Any]) -> list[str]:
    """Problems that make a ``UNet2DConditionModel`` config something other than SD 1.x."""
    problems = []
    if unet.get("use_linear_projection") or unet.get("cross_attention_dim") == 1024:
        problems.append("unet/config.json: use_linear_projection / cross_attention_dim 1024 are Stable Diffusion "
                        "2.x; sfumato_sd loads SD 1.x (1x1-conv projections, CLIP ViT-L/14 text states)")
    if unet.get("addition_embed_type") is not None:
        problems.append(f"unet/config.json: addition_embed_type {unet['addition_embed_type']!r} is SDXL-style; "
                        "SD 1.x has none")
    if unet.get("in_channels", 4) not in (4, 9):
        problems.append(f"unet/config.json: in_channels is {unet['in_channels']} (an image-conditioned model); "
                        "SD 1.x has 4 (text-to-image) or 9 (inpainting: the mask and the masked image's latents too)")
    width = text.get("hidden_size")
    if unet.get("cross_attention_dim") != width:
        problems.append(f"unet/config.json: cross_attention_dim {unet.get('cross_attention_dim')} differs from "
                        f"text_encoder/config.json hidden_size {width}")
    return problems


def unet_table(config: dict[str, Any]) -> dict[str, Any]:
    """``unet`` Spec fields of an SD 1.x ``UNet2DConditionModel`` config (diffusers' defaults
    where an entry is missing; the head count is diffusers' ``attention_head_dim``)."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    down = config.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"])
    return {
        "type": "unet",
        "in_channels": config.get("in_channels", 4),
        "out_channels": config.get("out_channels", 4),
        "sample_size": config.get("sample_size"),
        "block_out_channels": list(config.get("block_out_channels", [320, 640, 1280, 1280])),
        "layers_per_block": config.get("layers_per_block", 2),
        "attention": [block == "CrossAttnDownBlock2D" for block in down],
        "mid_attention": True,
        "attention_heads": list(heads) if isinstance(heads, (list, tuple)) else heads,
        "cross_attention_dim": config.get("cross_attention_dim", 1280),
        "norm_num_groups": config.get("norm_num_groups", 32),
        "norm_eps": config.get("norm_eps", 1e-5),
        "flip_sin_to_cos": config.get("flip_sin_to_cos", True),
        "freq_shift": config.get("freq_shift", 0),
        "downsample_padding": config.get("downsample_padding", 1),
    }


def vae_table(config: dict[str, Any], source: str) -> dict[str, Any]:
    """``vae-kl`` Spec fields of an ``AutoencoderKL`` config (diffusers' defaults where missing)."""
    for name in ("shift_factor", "latents_mean", "latents_std"):
        if config.get(name) is not None:
            raise sfumato.SpecError(f"{name} is set: latent normalisation of a later model family, not SD 1.x",
                                    source=source)
    return {
        "type": "vae-kl",
        "in_channels": config.get("in_channels", 3),
        "out_channels": config.get("out_channels", 3),
        "latent_channels": config.get("latent_channels", 4),
        "block_out_channels": list(config.get("block_out_channels", [64])),
        "layers_per_block": config.get("layers_per_block", 1),
        "norm_num_groups": config.get("norm_num_groups", 32),
        "scaling_factor": config.get("scaling_factor", 0.18215),
        "use_quant_conv": config.get("use_quant_conv", True),
        "use_post_quant_conv": config.get("use_post_quant_conv", True),
        "mid_block_attention": config.get("mid_block_add_attention", True),
    }


def spec_from_diffusers_folder(folder: Path) -> dict[str, Any]:
    """The sfumato spec of an SD 1.x diffusers pipeline folder, with absolute weights paths; a
    ``SpecError`` lists everything that makes it something else."""
    folder = folder.resolve()
    index = read_json(folder / "model_index.json")
    problems = check_layout(folder, index)
    if problems:
        raise sfumato.SpecError(problems, source=str(folder))
    unet = read_json(folder / "unet" / "config.json")
    vae = read_json(folder / "vae" / "config.json")
    text = read_json(folder / "text_encoder" / "config.json")
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    problems = check_sd1_unet(unet, text)
    if problems:
        raise sfumato.SpecError(problems, source=str(folder))

    spec = sd1_template()
    spec["denoiser"] = {**unet_table(unet), "weights": str(folder / "unet")}
    spec["autoencoder"] = {**vae_table(vae, str(folder / "vae" / "config.json")), "weights": str(folder / "vae")}
    spec["text_encoder"].update(weights=str(folder / "text_encoder"), tokenizer=str(folder / "tokenizer"))
    scheduler_source = str(folder / "scheduler" / "scheduler_config.json")
    spec["diffusion"] = diffusion_table(scheduler, scheduler_source)
    spec["scheduler"] = {**scheduler_table(scheduler, scheduler_source), "steps": SD_STEPS}
    if spec["denoiser"]["sample_size"]:
        size = spec["denoiser"]["sample_size"] * 2 ** (len(spec["autoencoder"]["block_out_channels"]) - 1)
        spec["task"].update(height=size, width=size)
    if spec["denoiser"]["in_channels"] == 9:  # an inpainting U-Net reads the mask and masked image (sfumato.blocks)
        spec["task"]["type"] = "inpaint"
    return spec
