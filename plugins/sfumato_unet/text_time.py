"""SDXL's added conditioning (``addition_embed_type = "text_time"``, Podell et al. 2023,
https://arxiv.org/abs/2307.01952): a second text encoder, its pooled embedding and the size
micro-conditioning, as diffusers' ``StableDiffusionXLPipeline`` computes them.

    tokens      = [text_encoder tokens ; text_encoder_2 tokens]   concatenated along the width
    text_embeds = text_encoder_2 pooled (projected)               ``[B, D2]``
    time_ids    = original size (h, w) + crop top-left (top, left) + target size (h, w)   ``[B, 6]``
    emb        += add_embedding([text_embeds ; sinusoid(time_ids) flattened])

A call without a negative prompt gets zeros as its whole negative conditioning when
``force_zeros_for_empty_prompt`` is set (SDXL's pipelines ship with it), not the empty prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import sfumato

#: The call inputs of a ``text_time`` U-Net, as diffusers' SDXL pipeline names them: ``(height,
#: width)`` pairs ``original_size`` and ``target_size`` (default: the call's size) and
#: ``crops_coords_top_left`` ``(top, left)`` (default ``(0, 0)``).
TEXT_TIME_INPUTS = ("original_size", "crops_coords_top_left", "target_size")


def text_time_input(spec: Any, extras: dict[str, Tensor], batch: int) -> Tensor:
    """``[text_embeds ; sinusoid(time_ids)]`` ``[B, projection_class_embeddings_input_dim]``, the
    input of the U-Net's ``add_embedding`` MLP."""
    missing = [name for name in ("text_embeds", "time_ids") if name not in extras]
    if missing:
        raise ValueError(f"this U-Net (addition_embed_type 'text_time', SDXL) needs cond.extras {missing}: "
                         "generate through a pipeline with its [addition_text_encoder] table, or set them")
    time_ids = extras["time_ids"]  # (B, 6)
    sinusoid = sfumato.nn.timestep_embedding(time_ids.flatten(), spec.addition_time_embed_dim,
                                             spec.flip_sin_to_cos, spec.freq_shift)  # (B * 6, D_t)
    joined = torch.cat([extras["text_embeds"].float(), sinusoid.reshape(batch, -1)], dim=-1)  # (B, D2 + 6 * D_t)
    if joined.shape[-1] != spec.projection_class_embeddings_input_dim:
        raise ValueError(f"text_embeds ({extras['text_embeds'].shape[-1]}) + 6 x {spec.addition_time_embed_dim} "
                         f"time_ids make {joined.shape[-1]} values; this U-Net's add_embedding takes "
                         f"{spec.projection_class_embeddings_input_dim}")
    return joined


def size_pair(inputs: dict[str, Any], name: str, default: tuple[int, int]) -> tuple[int, int]:
    """A ``(h, w)`` / ``(top, left)`` call input, checked."""
    value = inputs.get(name, default)
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise sfumato.ArgumentError(name, f"{value!r} is not a pair of whole numbers of pixels, such as (1024, 1024)")
    return int(value[0]), int(value[1])


def text_time_conditioning(spec: Any, cond: sfumato.Conditioning, request: Any) -> sfumato.Conditioning:
    """``cond`` with the second text encoder's tokens concatenated and ``text_embeds`` and
    ``time_ids`` in its extras (and its negative's)."""
    pipe = request.pipe
    encoder = pipe.component(spec.addition_text_encoder)
    if encoder is None:
        raise sfumato.SpecError(f"this U-Net (SDXL, addition_embed_type 'text_time') needs its second text encoder "
                                f"in a [{spec.addition_text_encoder}] table", source=pipe.source)
    if cond.tokens is None or cond.negative is None:
        raise sfumato.ArgumentError("prompt", "an SDXL model is conditioned on a prompt (it has no classes)")
    prompts = request.prompts or [""] * cond.tokens.shape[0]
    negatives = request.negative_prompts or [None] * len(prompts)
    device, dtype = cond.tokens.device, cond.tokens.dtype
    positive = encoder.encode(prompts)
    negative = encoder.encode(["" if n is None else n for n in negatives])
    tokens = torch.cat([cond.tokens, positive.tokens.to(device, dtype)], dim=-1)  # (B, L, D1 + D2)
    negative_tokens = torch.cat([cond.negative.tokens, negative.tokens.to(device, dtype)], dim=-1)
    negative_pooled = negative.pooled.to(device, dtype)
    if spec.force_zeros_for_empty_prompt and request.prompts and all(n is None for n in negatives):
        negative_tokens, negative_pooled = torch.zeros_like(negative_tokens), torch.zeros_like(negative_pooled)
    size = (request.height, request.width)
    ids = [*size_pair(request.inputs, "original_size", size), *size_pair(request.inputs, "crops_coords_top_left", (0, 0)),
           *size_pair(request.inputs, "target_size", size)]
    time_ids = torch.tensor([ids], device=device, dtype=dtype).expand(tokens.shape[0], -1)  # (B, 6)
    out = sfumato.Conditioning(tokens=tokens, pooled=cond.pooled, labels=cond.labels, mask=cond.mask,
                               extras={**cond.extras, "text_embeds": positive.pooled.to(device, dtype),
                                       "time_ids": time_ids})
    neg = cond.negative
    out.negative = sfumato.Conditioning(tokens=negative_tokens, pooled=neg.pooled, labels=neg.labels, mask=neg.mask,
                                        extras={**neg.extras, "text_embeds": negative_pooled, "time_ids": time_ids})
    return out
