"""The ``clip-text`` and ``clip-image`` encoders: sfumato ``Encoder`` components around the two
CLIP towers.

Both read the same checkpoint formats (see ``checkpoint.py``), so one CLIP file can serve as a
pipeline's text encoder and its image encoder. An encoder's own state dict uses the full CLIP
keys of its tower (``text.*`` / ``vision.*``), so ``sfumato.save_component`` writes files that
either encoder, or ``load_clip``, reads back.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import sfumato
import torch
from pydantic import Field
from sfumato import EncoderOutput
from torch import Tensor

from .checkpoint import resolve_checkpoint, tower_state
from .config import CLIPConfig
from .images import normalize_for_clip
from .model import TextTransformer, VisionTransformer
from .tokenizer import BUILTIN, TextTokenizer


class CLIPTowerSpec(sfumato.ComponentSpec):
    """Fields both CLIP encoders share."""

    weights: sfumato.SpecPath | None = Field(
        None,
        description="A sfumato CLIP .safetensors file, a transformers CLIP folder (config.json + "
        "model.safetensors) or a Stable Diffusion 1.x single file. None: random initialisation.",
    )
    architecture: str | CLIPConfig | None = Field(
        None,
        description="A preset (tiny, ViT-B/32, ViT-B/16, ViT-L/14) or a full config table. None: "
        "what the weights file records ('tiny' without weights). Resolved into the spec on build.",
    )


class CLIPTextSpec(CLIPTowerSpec):
    type: Literal["clip-text"] = "clip-text"
    layer: Literal["last", "penultimate"] = Field(
        "last",
        description="Which layer's token states feed cross-attention: the last (Stable Diffusion "
        "1.x) or the penultimate ('clip skip 2'); the final LayerNorm is applied to either.",
    )
    tokenizer: sfumato.SpecPath | None = Field(
        None,
        description="'builtin:clip' (OpenAI's BPE, shipped), a tokenizer.json path, or a folder with "
        "tokenizer.json or vocab.json + merges.txt (a transformers CLIPTokenizer). None: a "
        "tokenizer.json beside the weights if there is one, else 'builtin:clip'.",
    )


class CLIPImageSpec(CLIPTowerSpec):
    type: Literal["clip-image"] = "clip-image"


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def build_tower(spec: CLIPTowerSpec, tower: Literal["text", "vision"]) -> tuple[torch.nn.Module, CLIPConfig]:
    """Build one tower from a spec's ``weights`` and ``architecture`` and write the resolved
    architecture back into the spec (so saved files record it)."""
    state, config = resolve_checkpoint(spec.weights, spec.architecture)
    spec.architecture = config
    module = (TextTransformer(config.text, config.embed_dim) if tower == "text"
              else VisionTransformer(config.vision, config.embed_dim))
    if state is not None:
        weights = tower_state(state, tower, spec.weights)
        prefix = len(tower) + 1
        sfumato.load_into(module, {k[prefix:]: v for k, v in weights.items()}, source=str(spec.weights))
    return module, config


def resolve_tokenizer_name(tokenizer: str | None, weights: str | None) -> str:
    """The tokenizer a text spec means: explicit, else ``tokenizer.json`` beside the weights."""
    if tokenizer is not None:
        return tokenizer
    if weights:
        beside = Path(weights) / "tokenizer.json" if Path(weights).is_dir() else Path(weights).with_name("tokenizer.json")
        if beside.is_file():
            return str(beside)
    return BUILTIN


class CLIPTextEncoder(sfumato.Encoder):
    """Captions -> ``EncoderOutput(tokens [B, 77, D], pooled [B, E], mask [B, 77])``.

    ``tokens`` are the (final-LayerNorm'd) states of the chosen layer, what a U-Net
    cross-attends to; ``pooled`` is the projected end-of-text state used for similarity.
    """

    modality: ClassVar[Literal["text"]] = "text"
    Spec = CLIPTextSpec

    def __init__(self, spec: CLIPTextSpec):
        super().__init__()
        self.text, config = build_tower(spec, "text")
        self.layer = -2 if spec.layer == "penultimate" else -1
        self.tokenizer = TextTokenizer.load(
            resolve_tokenizer_name(spec.tokenizer, spec.weights), config.text.context_length
        )
        if self.tokenizer.end_id != config.text.eos_token_id or self.tokenizer.vocab_size > config.text.vocab_size:
            raise ValueError(
                f"tokenizer (vocab {self.tokenizer.vocab_size}, end token {self.tokenizer.end_id}) "
                f"does not fit the text tower (vocab_size {config.text.vocab_size}, eos_token_id "
                f"{config.text.eos_token_id}); set architecture.text to match the tokenizer"
            )

    @property
    def embed_dim(self) -> int:
        return self.text.embed_dim

    def encode(self, inputs: list[str]) -> EncoderOutput:
        batch = self.tokenizer(inputs)
        device = _device(self)
        out = self.text(batch.input_ids.to(device), layer=self.layer)
        return EncoderOutput(tokens=out.tokens, pooled=out.pooled, mask=batch.mask.to(device))


class CLIPImageEncoder(sfumato.Encoder):
    """Images ``[B, 3, H, W]`` in [-1, 1] -> ``EncoderOutput(tokens [B, 1 + N, D], pooled [B, E])``.

    Resizing (shorter side, bicubic, centre crop) and the CLIP mean/std normalisation happen
    here, differentiably, so guidance methods can back-propagate to the pixels.
    """

    modality: ClassVar[Literal["image"]] = "image"
    Spec = CLIPImageSpec

    def __init__(self, spec: CLIPImageSpec):
        super().__init__()
        self.vision, _ = build_tower(spec, "vision")

    @property
    def embed_dim(self) -> int:
        return self.vision.embed_dim

    @property
    def image_size(self) -> int:
        return self.vision.config.image_size

    def encode(self, inputs: Tensor) -> EncoderOutput:
        weight = self.vision.patch_embed.weight
        pixels = normalize_for_clip(inputs.to(weight.device, weight.dtype), self.image_size)
        out = self.vision(pixels)
        return EncoderOutput(tokens=out.tokens, pooled=out.pooled)
