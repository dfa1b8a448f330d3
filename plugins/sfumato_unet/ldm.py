"""Key conversion for Stable Diffusion 1.x single-file checkpoints (the original CompVis LDM
layout, https://github.com/CompVis/stable-diffusion), whose U-Net keys read
``model.diffusion_model.input_blocks.1.0.in_layers.0.weight``.

LDM numbers its blocks flatly: ``input_blocks.0`` is ``conv_in``; then each level has
``layers_per_block`` blocks (``.0`` the resnet, ``.1`` the transformer) and, except the last
level, one downsampler (``.0.op``). ``output_blocks`` has ``layers_per_block + 1`` blocks per
level, the last of which also holds the upsampler (``.1.conv``, or ``.2.conv`` after a
transformer). Transformer internals have the same names in both layouts; resnets are renamed
by ``RESNET_NAMES``. SDXL single files (Stability's SGM layout) keep this U-Net layout and add
``label_emb.0.{0,2}``, the MLP of the ``text_time`` added embedding.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

import sfumato

from .spec import UNetSpec

LDM_PREFIX = "model.diffusion_model."

#: LDM resnet sub-module -> sfumato (diffusers) name.
RESNET_NAMES = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}


def _resnet(ldm: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{ldm}.{a}.", f"{ours}.{b}.") for a, b in RESNET_NAMES.items()]


def ldm_prefix_map(spec: UNetSpec) -> list[tuple[str, str]]:
    """``(ldm_prefix, sfumato_prefix)`` pairs covering every parameter of a U-Net with ``spec``."""
    if spec.cross_attention_dim is None and (any(spec.attention) or spec.mid_attention):
        raise sfumato.SpecError("the LDM single-file layout is supported for Stable Diffusion (cross-attention) U-Nets only")
    per_level = spec.layers_per_block
    levels = len(spec.block_out_channels)
    pairs = [
        ("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.", "class_embedding."), ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
    ]
    if spec.addition_embed_type == "text_time":  # SDXL (SGM layout): the added embedding's MLP
        pairs += [("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2.")]
    for level in range(levels):
        for j in range(per_level):
            block = f"input_blocks.{level * (per_level + 1) + j + 1}"
            pairs += _resnet(f"{block}.0", f"down_blocks.{level}.resnets.{j}")
            pairs.append((f"{block}.1.", f"down_blocks.{level}.attentions.{j}."))
        if level < levels - 1:
            pairs.append((f"input_blocks.{(level + 1) * (per_level + 1)}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
    pairs += _resnet("middle_block.0", "mid_block.resnets.0")
    if spec.mid_attention:
        pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    pairs += _resnet(f"middle_block.{1 + spec.mid_attention}", "mid_block.resnets.1")
    for i, level in enumerate(reversed(range(levels))):  # up block i works at `level`
        for j in range(per_level + 1):
            block = f"output_blocks.{i * (per_level + 1) + j}"
            pairs += _resnet(f"{block}.0", f"up_blocks.{i}.resnets.{j}")
            pairs.append((f"{block}.1.", f"up_blocks.{i}.attentions.{j}."))
        if level > 0:
            last = f"output_blocks.{i * (per_level + 1) + per_level}"
            pairs.append((f"{last}.{1 + spec.attention[level]}.conv.", f"up_blocks.{i}.upsamplers.0.conv."))
    return pairs


def _rename(state_dict: Mapping[str, Tensor], pairs: list[tuple[str, str]], source: str) -> dict[str, Tensor]:
    """Rename each key by its longest matching prefix; keys no prefix matches are an error."""
    return sfumato.rename_by_prefix(state_dict, pairs, source, "the U-Net")


def unet_state_dict_from_ldm(state_dict: Mapping[str, Tensor], spec: UNetSpec) -> dict[str, Tensor]:
    """The U-Net of an LDM / SD 1.x checkpoint in sfumato's parameter names.

    ``state_dict`` may be a whole single-file checkpoint (only its ``model.diffusion_model.*``
    keys are used; the VAE, text encoder and EMA copies are ignored) or the U-Net alone.
    """
    if any(key.startswith(LDM_PREFIX) for key in state_dict):
        state_dict = {k[len(LDM_PREFIX):]: v for k, v in state_dict.items() if k.startswith(LDM_PREFIX)}
    return _rename(state_dict, ldm_prefix_map(spec), "LDM checkpoint")


def unet_state_dict_to_ldm(state_dict: Mapping[str, Tensor], spec: UNetSpec) -> dict[str, Tensor]:
    """The inverse of ``unet_state_dict_from_ldm``: sfumato names -> ``model.diffusion_model.*``."""
    pairs = [(ours, LDM_PREFIX + ldm) for ldm, ours in ldm_prefix_map(spec)]
    return _rename(state_dict, pairs, "U-Net state dict")
