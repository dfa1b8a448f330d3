"""Hugging Face transformers and Stable Diffusion 1.x CLIP checkpoints <-> sfumato's CLIP.

sfumato keeps q, k and v in one fused ``attn.qkv`` projection; transformers keeps them apart.
The key map is explicit (as nanoGPT does it) so a reader can check every name:

=====================================================  =================================
transformers                                           sfumato
=====================================================  =================================
text_model.embeddings.token_embedding.weight           text.token_embedding.weight
text_model.embeddings.position_embedding.weight        text.position_embedding
text_model.encoder.layers.N.layer_norm1/2              text.blocks.N.norm1/2
text_model.encoder.layers.N.self_attn.{q,k,v}_proj     text.blocks.N.attn.qkv (stacked q, k, v)
text_model.encoder.layers.N.self_attn.out_proj         text.blocks.N.attn.out
text_model.encoder.layers.N.mlp.fc1/fc2                text.blocks.N.mlp.fc1/fc2
text_model.final_layer_norm                            text.final_norm
text_projection.weight                                 text.projection.weight
vision_model.embeddings.class_embedding                vision.class_embedding
vision_model.embeddings.patch_embedding.weight         vision.patch_embed.weight
vision_model.embeddings.position_embedding.weight      vision.position_embedding
vision_model.pre_layrnorm (sic) / post_layernorm       vision.pre_norm / vision.post_norm
visual_projection.weight                               vision.projection.weight
logit_scale                                            logit_scale
=====================================================  =================================

Stable Diffusion 1.x single files hold the text encoder under
``cond_stage_model.transformer.text_model.``; a bare ``CLIPTextTransformer`` or
``CLIPVisionTransformer`` state dict has no ``text_model.`` / ``vision_model.`` prefix at all.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from sfumato import WeightsError
from torch import Tensor

from .config import CLIPConfig, TextConfig, VisionConfig

SD1_TEXT_PREFIX = "cond_stage_model.transformer."

_RENAMES = {
    "text_model.embeddings.token_embedding.weight": "text.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "text.position_embedding",
    "text_model.final_layer_norm.weight": "text.final_norm.weight",
    "text_model.final_layer_norm.bias": "text.final_norm.bias",
    "text_projection.weight": "text.projection.weight",
    "vision_model.embeddings.class_embedding": "vision.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "vision.patch_embed.weight",
    "vision_model.embeddings.position_embedding.weight": "vision.position_embedding",
    "vision_model.pre_layrnorm.weight": "vision.pre_norm.weight",
    "vision_model.pre_layrnorm.bias": "vision.pre_norm.bias",
    "vision_model.post_layernorm.weight": "vision.post_norm.weight",
    "vision_model.post_layernorm.bias": "vision.post_norm.bias",
    "visual_projection.weight": "vision.projection.weight",
    "logit_scale": "logit_scale",
}
_LAYER_RENAMES = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.out",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_LAYER = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_OURS_LAYER = re.compile(r"^(text|vision)\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = ("q_proj", "k_proj", "v_proj")


def is_hf_layout(state: Mapping[str, Tensor]) -> bool:
    """True for transformers-style keys (with or without the tower prefix, or SD 1.x's)."""
    return any(
        k.startswith(("text_model.", "vision_model.", "embeddings.", "encoder.", SD1_TEXT_PREFIX))
        for k in state
    )


def _add_tower_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip SD 1.x's prefix (dropping its other components) and give a bare
    ``CLIPTextTransformer`` / ``CLIPVisionTransformer`` state dict its ``*_model.`` prefix."""
    if any(k.startswith(SD1_TEXT_PREFIX) for k in state):
        state = {k[len(SD1_TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(SD1_TEXT_PREFIX)}
    if any(k.startswith(("text_model.", "vision_model.")) for k in state):
        return dict(state)
    tower = "vision_model." if "embeddings.patch_embedding.weight" in state else "text_model."
    return {k if k in _RENAMES else tower + k: v for k, v in state.items()}


def hf_to_sfumato(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers CLIP state dict (any of the layouts above) to sfumato's keys,
    fusing q, k and v. Unknown keys are an error that lists them."""
    state = _add_tower_prefix(state)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("position_ids"):  # a non-persistent buffer some old exports contain
            continue
        if key in _RENAMES:
            out[_RENAMES[key]] = value
            continue
        match = _HF_LAYER.match(key)
        if match is None:
            unknown.append(key)
            continue
        tower, index, name, param = match.groups()
        if name.startswith("self_attn.") and name.split(".")[1] in _QKV:
            qkv.setdefault((tower, index, param), {})[name.split(".")[1]] = value
        elif name in _LAYER_RENAMES:
            out[f"{tower}.blocks.{index}.{_LAYER_RENAMES[name]}.{param}"] = value
        else:
            unknown.append(key)
    for (tower, index, param), parts in qkv.items():
        if set(parts) != set(_QKV):
            raise WeightsError(f"{tower}_model layer {index}: only {sorted(parts)} of q/k/v {param}")
        out[f"{tower}.blocks.{index}.attn.qkv.{param}"] = torch.cat([parts[p] for p in _QKV])
    if unknown:
        raise WeightsError(f"{len(unknown)} key(s) not part of a CLIP model: {sorted(unknown)[:20]}")
    return out


def sfumato_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of ``hf_to_sfumato``: transformers ``CLIPModel`` keys (q, k, v split)."""
    reverse = {ours: theirs for theirs, ours in _RENAMES.items()}
    layer_reverse = {ours: theirs for theirs, ours in _LAYER_RENAMES.items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in reverse:
            out[reverse[key]] = value
            continue
        match = _OURS_LAYER.match(key)
        if match is None:
            raise WeightsError(f"{key!r} has no transformers CLIP equivalent")
        tower, index, name, param = match.groups()
        prefix = f"{tower}_model.encoder.layers.{index}"
        if name == "attn.qkv":
            for part, tensor in zip(_QKV, value.chunk(3)):
                out[f"{prefix}.self_attn.{part}.{param}"] = tensor
        else:
            out[f"{prefix}.{layer_reverse[name]}.{param}"] = value
    return out


# -- configs ----------------------------------------------------------------------------------

# sfumato config field -> transformers config field, per tower.
_TOWER_FIELDS = {"width": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
                 "mlp_width": "intermediate_size", "activation": "hidden_act", "norm_eps": "layer_norm_eps"}
_TEXT_FIELDS = {**_TOWER_FIELDS, "vocab_size": "vocab_size", "context_length": "max_position_embeddings",
                "eos_token_id": "eos_token_id"}
_VISION_FIELDS = {**_TOWER_FIELDS, "image_size": "image_size", "patch_size": "patch_size"}


def _tower_from_hf(hf: Mapping[str, Any], cls: type, fields: Mapping[str, str]) -> Any:
    values = {ours: hf[theirs] for ours, theirs in fields.items() if theirs in hf}
    if values.get("activation", "quick_gelu") not in ("quick_gelu", "gelu"):
        raise WeightsError(f"hidden_act {values['activation']!r} is not supported; use quick_gelu or gelu")
    if fields is _TEXT_FIELDS and values.get("eos_token_id", 2) == 2:
        # transformers' legacy marker for "pool at the argmax id": CLIP vocabularies put the end
        # token last, so that is the first occurrence of the last id.
        values["eos_token_id"] = values.get("vocab_size", 49408) - 1
    return cls(**values)


def _tower_to_hf(config: Any, fields: Mapping[str, str], model_type: str) -> dict[str, Any]:
    return {"model_type": model_type, **{theirs: getattr(config, ours) for ours, theirs in fields.items()}}


def config_from_hf(hf: Mapping[str, Any], embed_dim: int | None) -> CLIPConfig:
    """A ``CLIPConfig`` from a transformers ``config.json`` of a ``CLIPModel``, ``CLIPTextModel``
    (with or without projection) or ``CLIPVisionModel``. ``embed_dim`` is the projections' width
    as the weights hold them (None for a bare ``CLIPTextModel``, which has none)."""
    model_type = hf.get("model_type", "clip")
    if model_type == "clip_text_model":
        return CLIPConfig(embed_dim=embed_dim, text=_tower_from_hf(hf, TextConfig, _TEXT_FIELDS))
    if model_type == "clip_vision_model":
        return CLIPConfig(embed_dim=embed_dim, vision=_tower_from_hf(hf, VisionConfig, _VISION_FIELDS))
    if model_type != "clip":
        raise WeightsError(f"config.json has model_type {model_type!r}; expected a CLIP model")
    return CLIPConfig(
        embed_dim=embed_dim,
        text=_tower_from_hf(hf.get("text_config") or {}, TextConfig, _TEXT_FIELDS),
        vision=_tower_from_hf(hf.get("vision_config") or {}, VisionConfig, _VISION_FIELDS),
        logit_scale_init=hf.get("logit_scale_init_value", 2.6592),
    )


def config_to_hf(config: CLIPConfig) -> dict[str, Any]:
    """A transformers ``CLIPModel`` ``config.json`` for ``config``."""
    if not config.embed_dim:
        raise WeightsError("a transformers CLIPModel needs projections; this config has embed_dim = 0 (none)")
    text = _tower_to_hf(config.text, _TEXT_FIELDS, "clip_text_model")
    text.update(bos_token_id=config.text.eos_token_id - 1, pad_token_id=1, projection_dim=config.embed_dim)
    vision = _tower_to_hf(config.vision, _VISION_FIELDS, "clip_vision_model")
    vision.update(num_channels=3, projection_dim=config.embed_dim)
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.logit_scale_init,
        "text_config": text,
        "vision_config": vision,
    }
