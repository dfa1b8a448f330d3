"""open_clip (and OpenAI CLIP) state dicts <-> sfumato's CLIP keys.

open_clip's ``CLIP`` keeps OpenAI's layout (``open_clip/model.py``, ``transformer.py``): attention is
``nn.MultiheadAttention`` with q, k and v stacked in ``in_proj_weight`` (sfumato's fused ``qkv``
as it is), and the projections are plain matrices applied as ``x @ proj`` (the transpose of a
``Linear`` weight):

=====================================================  =================================
open_clip                                              sfumato
=====================================================  =================================
token_embedding.weight                                 text.token_embedding.weight
positional_embedding                                   text.position_embedding
transformer.resblocks.N.ln_1 / ln_2                    text.blocks.N.norm1 / norm2
transformer.resblocks.N.attn.in_proj_{weight,bias}     text.blocks.N.attn.qkv.{weight,bias}
transformer.resblocks.N.attn.out_proj                  text.blocks.N.attn.out
transformer.resblocks.N.mlp.c_fc / c_proj              text.blocks.N.mlp.fc1 / fc2
ln_final                                               text.final_norm
text_projection [W, E]                                 text.projection.weight [E, W]
visual.class_embedding                                 vision.class_embedding
visual.positional_embedding                            vision.position_embedding
visual.conv1.weight                                    vision.patch_embed.weight
visual.ln_pre / visual.ln_post                         vision.pre_norm / vision.post_norm
visual.transformer.resblocks.N.*                       vision.blocks.N.* (as for text)
visual.proj [W, E]                                     vision.projection.weight [E, W]
logit_scale (, logit_bias)                             logit_scale (, logit_bias)
=====================================================  =================================

The architecture is read from the shapes; heads are ``width // 64`` as in every OpenAI and
open_clip ViT. The activation cannot be read from weights: OpenAI's weights (open_clip's
``*-quickgelu`` models and ``pretrained="openai"``) need ``quick_gelu``, the default; open_clip's
own LAION-trained models use exact GELU: give ``architecture`` with ``activation = "gelu"``.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

from sfumato import WeightsError
from torch import Tensor

from .config import CLIPConfig, TextConfig, VisionConfig

#: OpenAI's JIT exports carry these bookkeeping entries; they hold no weights.
BOOKKEEPING = {"input_resolution", "context_length", "vocab_size", "attn_mask", "visual.attn_mask"}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {"ln_1": "norm1", "ln_2": "norm2", "attn.in_proj_weight": "attn.qkv.weight",
                  "attn.in_proj_bias": "attn.qkv.bias", "attn.out_proj": "attn.out", "mlp.c_fc": "mlp.fc1",
                  "mlp.c_proj": "mlp.fc2"}
_RENAMES = {"token_embedding.weight": "text.token_embedding.weight", "positional_embedding": "text.position_embedding",
            "ln_final.weight": "text.final_norm.weight", "ln_final.bias": "text.final_norm.bias",
            "visual.class_embedding": "vision.class_embedding",
            "visual.positional_embedding": "vision.position_embedding", "visual.conv1.weight": "vision.patch_embed.weight",
            "visual.ln_pre.weight": "vision.pre_norm.weight", "visual.ln_pre.bias": "vision.pre_norm.bias",
            "visual.ln_post.weight": "vision.post_norm.weight", "visual.ln_post.bias": "vision.post_norm.bias",
            "logit_scale": "logit_scale", "logit_bias": "logit_bias"}
#: The attention head width of OpenAI's and open_clip's ViTs.
HEAD_WIDTH = 64


def is_open_clip_layout(state: Mapping[str, Tensor]) -> bool:
    """True for an open_clip / OpenAI CLIP state dict (``transformer.resblocks.*``, ``visual.*``)."""
    return "token_embedding.weight" in state and any(k.startswith("transformer.resblocks.") for k in state)


def open_clip_to_sfumato(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an open_clip state dict to sfumato's keys; unknown keys are an error listing them."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in BOOKKEEPING:
            continue
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key in ("text_projection", "visual.proj"):
            out["text.projection.weight" if key == "text_projection" else "vision.projection.weight"] = value.T
        elif (match := _BLOCK.match(key)) is not None:
            visual, index, name = match.groups()
            tower = "vision" if visual else "text"
            for theirs, ours in _BLOCK_RENAMES.items():
                if name == theirs or name.startswith(theirs + "."):
                    out[f"{tower}.blocks.{index}.{ours}{name[len(theirs):]}"] = value
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"{len(unknown)} key(s) of this open_clip checkpoint are not part of a ViT CLIP "
                           f"(a ResNet or timm image tower is not supported): {sorted(unknown)[:20]}")
    return out


def _layers(state: Mapping[str, Tensor], prefix: str) -> int:
    found = {int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and bool(m.group(1)) == (prefix == "visual.")}
    return max(found) + 1 if found else 0


def config_from_open_clip(state: Mapping[str, Tensor]) -> CLIPConfig:
    """The architecture of an open_clip state dict, read from its shapes (``quick_gelu``, see above)."""
    try:
        text_width = state["token_embedding.weight"].shape[1]
        vision_width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
        text = TextConfig(width=text_width, layers=_layers(state, ""), heads=text_width // HEAD_WIDTH,
                          mlp_width=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                          vocab_size=state["token_embedding.weight"].shape[0],
                          context_length=state["positional_embedding"].shape[0],
                          eos_token_id=state["token_embedding.weight"].shape[0] - 1)
        vision = VisionConfig(width=vision_width, layers=_layers(state, "visual."), heads=vision_width // HEAD_WIDTH,
                              mlp_width=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                              image_size=grid * patch, patch_size=patch)
        embed_dim = state["text_projection"].shape[1]
    except KeyError as exc:
        raise WeightsError(f"not a ViT CLIP in open_clip's layout: {exc.args[0]} is missing") from None
    scale = state.get("logit_scale")
    return CLIPConfig(embed_dim=embed_dim, text=text, vision=vision,
                      **({"logit_scale_init": float(scale)} if scale is not None else {}),
                      **({"logit_bias_init": float(state["logit_bias"])} if "logit_bias" in state else {}))
