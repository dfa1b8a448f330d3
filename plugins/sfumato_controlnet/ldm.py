"""ControlNet single files in the original layout (``lllyasviel/ControlNet``'s ``cldm``):
``control_model.*`` keys, the U-Net encoder half in LDM numbering plus

    input_hint_block.0 / .2k / .last     controlnet_cond_embedding.conv_in / blocks.(k-1) / conv_out
    zero_convs.i.0                       controlnet_down_blocks.i
    middle_block_out.0                   controlnet_mid_block

The LDM numbering of the encoder (``input_blocks.0`` is ``conv_in``; then per level
``layers_per_block`` blocks, ``.0`` the resnet and ``.1`` the transformer, and one downsampler
``.0.op``; ``middle_block.0/1/2``) is the one of Stable Diffusion's U-Net (the ``unet`` plugin's
``ldm.py`` reads whole U-Nets; a ControlNet has no up path, so it is written out here for the
encoder half alone).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

import sfumato

LDM_PREFIX = "control_model."
RESNET_NAMES = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}


def is_ldm_controlnet(keys: list[str]) -> bool:
    """Whether a file's keys are a ControlNet in the original layout (with or without ``control_model.``)."""
    return any(k.startswith((LDM_PREFIX + "input_hint_block.", "input_hint_block.")) for k in keys)


def prefix_map(config: dict[str, Any]) -> list[tuple[str, str]]:
    """``(ldm_prefix, diffusers_prefix)`` pairs for every parameter of the ControlNet ``config`` describes."""
    channels = list(config.get("block_out_channels", [320, 640, 1280, 1280]))
    per_level, levels = config.get("layers_per_block", 2), len(channels)
    hint = len(config.get("conditioning_embedding_out_channels", [16, 32, 96, 256]))
    pairs = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
             ("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2."),
             ("input_blocks.0.0.", "conv_in."), ("input_hint_block.0.", "controlnet_cond_embedding.conv_in."),
             (f"input_hint_block.{2 * (2 * (hint - 1) + 1)}.", "controlnet_cond_embedding.conv_out."),
             ("middle_block_out.0.", "controlnet_mid_block.")]
    pairs += [(f"input_hint_block.{2 * (k + 1)}.", f"controlnet_cond_embedding.blocks.{k}.") for k in range(2 * (hint - 1))]
    skips = 1 + sum(per_level + (level < levels - 1) for level in range(levels))
    pairs += [(f"zero_convs.{i}.0.", f"controlnet_down_blocks.{i}.") for i in range(skips)]
    for level in range(levels):
        for j in range(per_level):
            block = f"input_blocks.{level * (per_level + 1) + j + 1}"
            pairs += [(f"{block}.0.{a}.", f"down_blocks.{level}.resnets.{j}.{b}.") for a, b in RESNET_NAMES.items()]
            pairs.append((f"{block}.1.", f"down_blocks.{level}.attentions.{j}."))
        if level < levels - 1:
            pairs.append((f"input_blocks.{(level + 1) * (per_level + 1)}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
    for index, name in ((0, "resnets.0"), (2, "resnets.1")):
        pairs += [(f"middle_block.{index}.{a}.", f"mid_block.{name}.{b}.") for a, b in RESNET_NAMES.items()]
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    return pairs


def controlnet_state_dict_from_ldm(state: Mapping[str, Tensor], config: dict[str, Any], source: str) -> dict[str, Tensor]:
    """A ControlNet in the original layout, in diffusers' (and so this network's) names
    (``sfumato.rename_by_prefix``: a key no prefix matches is an error listing it)."""
    if any(k.startswith(LDM_PREFIX) for k in state):
        state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    return sfumato.rename_by_prefix(state, prefix_map(config), source, "the ControlNet")
