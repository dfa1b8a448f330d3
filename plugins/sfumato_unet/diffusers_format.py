"""The diffusers component-folder format: ``config.json`` + ``diffusion_pytorch_model.safetensors``.

Pixel models map to diffusers' ``UNet2DModel`` (DDPM-style self-attention), cross-attention
models to ``UNet2DConditionModel``. Parameter names are the same in both layouts, so only the
configuration is translated. One naming quirk: ``UNet2DConditionModel.attention_head_dim`` is the
number of heads, while ``UNet2DModel.attention_head_dim`` is the width of a head.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

import sfumato

from .spec import UNetSpec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
#: The diffusers version whose config layout ``diffusers_config_from_spec`` writes.
DIFFUSERS_FORMAT_VERSION = "0.30.0"

#: diffusers options sfumato does not implement, with the only value it accepts.
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "act_fn": "silu", "center_input_sample": False, "resnet_time_scale_shift": "default",
    "mid_block_scale_factor": 1, "class_embed_type": None, "time_embedding_type": "positional",
    "downsample_type": "conv", "upsample_type": "conv", "attn_norm_num_groups": None,
    "conv_in_kernel": 3, "conv_out_kernel": 3, "only_cross_attention": False, "dual_cross_attention": False,
    "encoder_hid_dim": None, "time_cond_proj_dim": None, "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None, "timestep_post_act": None,
    "time_embedding_dim": None, "time_embedding_act_fn": None, "attention_type": "default",
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "reverse_transformer_layers_per_block": None,
}
CROSS_BLOCKS = {"down": ("DownBlock2D", "CrossAttnDownBlock2D"), "up": ("UpBlock2D", "CrossAttnUpBlock2D")}
SELF_BLOCKS = {"down": ("DownBlock2D", "AttnDownBlock2D"), "up": ("UpBlock2D", "AttnUpBlock2D")}
MID_BLOCKS = {"UNet2DModel": "UNetMidBlock2D", "UNet2DConditionModel": "UNetMidBlock2DCrossAttn"}
#: Attention parameter names of diffusers checkpoints saved before 0.14 (e.g. google/ddpm-*).
LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _uniform(name: str, value: Any) -> Any:
    """A per-level diffusers option that sfumato holds as one value."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise sfumato.SpecError(f"diffusers {name}={value}: sfumato supports one value for all levels")
        return value[0]
    return value


def spec_from_diffusers_config(config: Mapping[str, Any]) -> UNetSpec:
    """Translate a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` config into a ``UNetSpec``.

    Options sfumato does not implement must have their default value; anything else is an error
    naming the option. Without ``_class_name``, a config with ``cross_attention_dim`` is a
    ``UNet2DConditionModel``.
    """
    class_name = config.get("_class_name", "UNet2DConditionModel" if "cross_attention_dim" in config else "UNet2DModel")
    if class_name not in MID_BLOCKS:
        raise sfumato.SpecError(f"config is a {class_name}; expected one of {sorted(MID_BLOCKS)}")
    cross = class_name == "UNet2DConditionModel"
    for option, accepted in UNSUPPORTED_OPTIONS.items():
        if config.get(option, accepted) != accepted:
            raise sfumato.SpecError(f"diffusers option {option}={config[option]!r} is not supported (only {accepted!r})")
    if config.get("addition_embed_type") not in (None, "text_time"):
        raise sfumato.SpecError(f"diffusers option addition_embed_type={config['addition_embed_type']!r} is not "
                                "supported (only None, or 'text_time': SDXL)")
    blocks = CROSS_BLOCKS if cross else SELF_BLOCKS
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    attention = [name == blocks["down"][1] for name in down]
    expected_up = [blocks["up"][a] for a in reversed(attention)]
    if any(name not in blocks["down"] for name in down) or up != expected_up:
        raise sfumato.SpecError(f"{class_name} blocks {down} / {up}: sfumato supports {blocks['down']} going down "
                                f"and the mirror image {expected_up} going up")
    mid_type = config.get("mid_block_type", MID_BLOCKS[class_name])
    if mid_type != MID_BLOCKS[class_name]:
        raise sfumato.SpecError(f"mid_block_type {mid_type!r} is not supported (only {MID_BLOCKS[class_name]!r})")
    null_class = bool(config.get("_sfumato_null_class", False))
    num_class_embeds = config.get("num_class_embeds")
    fields: dict[str, Any] = dict(
        in_channels=config.get("in_channels", 4 if cross else 3),
        out_channels=config.get("out_channels", 4 if cross else 3),
        sample_size=_uniform("sample_size", config.get("sample_size")),
        block_out_channels=list(config["block_out_channels"]),
        layers_per_block=_uniform("layers_per_block", config.get("layers_per_block", 2)),
        attention=attention,
        num_classes=num_class_embeds - null_class if num_class_embeds else None,
        null_class=null_class,
        dropout=config.get("dropout", 0.0),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        downsample_padding=config.get("downsample_padding", 1),
    )
    if cross:
        heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
        layers = config.get("transformer_layers_per_block", 1)
        fields.update(
            attention_heads=list(heads) if isinstance(heads, (list, tuple)) else heads,
            cross_attention_dim=_uniform("cross_attention_dim", config.get("cross_attention_dim", 1280)),
            transformer_layers=list(layers) if isinstance(layers, (list, tuple)) and len(set(layers)) > 1
            else _uniform("transformer_layers_per_block", layers),
            linear_projection=config.get("use_linear_projection", False),
        )
        if config.get("addition_embed_type") == "text_time":
            fields.update(addition_embed_type="text_time", addition_time_embed_dim=config["addition_time_embed_dim"],
                          projection_class_embeddings_input_dim=config["projection_class_embeddings_input_dim"])
    else:
        fields.update(attention_head_dim=config.get("attention_head_dim", 8), mid_attention=config.get("add_attention", True))
    return UNetSpec(**fields)


def diffusers_config_from_spec(spec: UNetSpec) -> dict[str, Any]:
    """The diffusers ``config.json`` of a ``UNetSpec`` (the inverse of ``spec_from_diffusers_config``)."""
    levels = range(len(spec.block_out_channels))
    cross = spec.cross_attention_dim is not None
    blocks = CROSS_BLOCKS if cross else SELF_BLOCKS
    config: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel" if cross else "UNet2DModel",
        "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        "in_channels": spec.in_channels, "out_channels": spec.out_channels, "sample_size": spec.sample_size,
        "block_out_channels": list(spec.block_out_channels), "layers_per_block": spec.layers_per_block,
        "down_block_types": [blocks["down"][a] for a in spec.attention],
        "up_block_types": [blocks["up"][a] for a in reversed(spec.attention)],
        "mid_block_type": MID_BLOCKS["UNet2DConditionModel" if cross else "UNet2DModel"],
        "num_class_embeds": spec.num_class_embeds or None, "dropout": spec.dropout,
        "norm_num_groups": spec.norm_num_groups, "norm_eps": spec.norm_eps, "flip_sin_to_cos": spec.flip_sin_to_cos,
        "freq_shift": spec.freq_shift, "downsample_padding": spec.downsample_padding, "act_fn": "silu",
    }
    if spec.null_class:
        config["_sfumato_null_class"] = True
    attention_levels = [level for level in levels if spec.attention[level]] + ([-1] if spec.mid_attention else [])
    shapes = {level: spec.heads_at(level) for level in attention_levels}
    if cross:
        if not spec.mid_attention:
            raise sfumato.SpecError("UNet2DConditionModel has no middle block without attention; set mid_attention=true")
        if any(h * d != spec.block_out_channels[level] for level, (h, d) in shapes.items()):
            raise sfumato.SpecError("UNet2DConditionModel needs heads * head width == channels at every attention level")
        heads = [spec.heads_at(level)[0] for level in levels]
        config.update(
            attention_head_dim=heads[0] if len(set(heads)) == 1 else heads,  # diffusers' name for the head count
            cross_attention_dim=spec.cross_attention_dim,
            transformer_layers_per_block=spec.transformer_layers, use_linear_projection=spec.linear_projection,
        )
        if spec.addition_embed_type is not None:
            config.update(addition_embed_type=spec.addition_embed_type,
                          addition_time_embed_dim=spec.addition_time_embed_dim,
                          projection_class_embeddings_input_dim=spec.projection_class_embeddings_input_dim)
    else:
        widths = {d for h, d in shapes.values() if h > 1}
        if len(widths) > 1:
            raise sfumato.SpecError(f"UNet2DModel has one head width for all levels; this spec has {sorted(widths)}")
        config.update(attention_head_dim=widths.pop() if widths else None, add_attention=spec.mid_attention)
    return config


def rename_legacy_attention_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``attentions.0.query.weight`` -> ``attentions.0.to_q.weight`` (and key, value, proj_attn)."""
    pattern = re.compile(r"\.(" + "|".join(LEGACY_ATTENTION_NAMES) + r")\.(weight|bias)$")
    return {pattern.sub(lambda m: f".{LEGACY_ATTENTION_NAMES[m[1]]}.{m[2]}", k): v for k, v in state_dict.items()}


def load_diffusers_folder(folder: str | Path, allow_pickle: bool = False) -> tuple[UNetSpec, dict[str, Tensor]]:
    """Read a diffusers U-Net folder into ``(spec, state_dict)`` in sfumato's parameter names."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise sfumato.WeightsError(f"{folder}: not a diffusers component folder (no {CONFIG_NAME})")
    try:
        spec = spec_from_diffusers_config(json.loads((folder / CONFIG_NAME).read_text()))
    except sfumato.SpecError as exc:
        raise sfumato.SpecError(exc.problems, source=str(folder / CONFIG_NAME)) from exc
    weights = folder / WEIGHTS_NAME
    if not weights.is_file() and (folder / PICKLE_WEIGHTS_NAME).is_file():
        weights = folder / PICKLE_WEIGHTS_NAME
    return spec, rename_legacy_attention_keys(sfumato.load_weights(weights, allow_pickle=allow_pickle))


def save_diffusers_folder(spec: UNetSpec, state_dict: Mapping[str, Tensor], folder: str | Path) -> Path:
    """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` into ``folder``."""
    folder = Path(folder)
    config = json.dumps(diffusers_config_from_spec(spec), indent=2)
    sfumato.atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config))
    sfumato.save_weights(state_dict, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    return folder
