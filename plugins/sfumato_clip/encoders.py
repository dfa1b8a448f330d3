"""The ``clip-text`` and ``clip-image`` encoders: sfumato ``Encoder`` components around the two
CLIP towers.

Both read the same checkpoint formats (see ``checkpoint.py``), so one CLIP file, or one training
run folder, can serve as a pipeline's text encoder and its image encoder. An encoder's own state
dict uses the full CLIP keys of its tower (``text.*`` / ``vision.*``, and ``text_head.*`` /
``image_head.*`` for a fine-tuning head), so ``sfumato.save_component`` writes files that either
encoder, or ``load_clip``, reads back.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import sfumato
import torch
from pydantic import Field
from sfumato import EncoderOutput
from torch import Tensor

from .checkpoint import RUN_TABLES, is_run_folder, read_component_spec_value, resolve_checkpoint, run_table, tower_state
from .config import CLIPConfig
from .heads import HEAD_PREFIX, HEADS_FILE, ProjectionHead, Tower, head_from_state, heads_logit_scale
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
    head: sfumato.SpecPath | None = Field(
        None,
        description="The heads.safetensors of a train-clip-finetune run: its projection head for this tower "
        "maps the pooled embedding into the fine-tuned space. None: the head the weights hold, if any (a "
        "run folder, a CLIP file written with heads, a heads.safetensors inside a weights folder).",
    )
    prefix: str | None = Field(
        None,
        description="The key prefix of this tower inside a checkpoint that holds several models (an SDXL single "
        "file: 'conditioner.embedders.0.transformer.' for its first text encoder, 'conditioner.embedders.1.model.' "
        "for its second, in open_clip's layout). None, or a file without such keys (a tower saved alone): "
        "the file is read as a whole.",
    )
    logit_scale: float | None = Field(
        None,
        description="The learned log logit scale of the CLIP these towers belong to (log 100 for OpenAI's "
        "models): classification probabilities are softmax(exp(logit_scale) * cosine). None: what the weights "
        "record. Resolved into the spec on build.",
    )


class CLIPTextSpec(CLIPTowerSpec):
    type: Literal["clip-text"] = "clip-text"
    layer: Literal["last", "penultimate"] = Field(
        "last",
        description="Which layer's token states feed cross-attention: the last (Stable Diffusion "
        "1.x) or the penultimate ('clip skip 2'); the final LayerNorm is applied to either unless final_norm is false.",
    )
    final_norm: bool = Field(
        True, description="Apply the final LayerNorm to the chosen layer's token states (diffusers' clip skip does); "
        "false: the states as the layer outputs them (SDXL's penultimate states).",
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


def adopt_run(spec: CLIPTowerSpec, tower: Tower) -> None:
    """``weights`` naming a training run folder means the tower its ``trained.toml`` describes:
    take that table's weights, and its architecture, head, logit scale and tokenizer where the
    spec leaves them empty (the run's values are written into the spec)."""
    if not is_run_folder(spec.weights):
        return
    table = RUN_TABLES[tower]
    found = run_table(spec.weights, table)
    if found.get("type") != spec.type:
        raise sfumato.WeightsError(f"{spec.weights}: its [{table}] is of type {found.get('type')!r}, not "
                                   f"{spec.type!r}; give the output folder of a CLIP training run")
    spec.weights = found.get("weights")
    for name in ("architecture", "head", "logit_scale", "tokenizer"):
        if name in type(spec).model_fields and getattr(spec, name) is None and found.get(name) is not None:
            value = found[name]
            setattr(spec, name, CLIPConfig.model_validate(value) if name == "architecture" and isinstance(value, dict)
                    else value)


def build_tower(spec: CLIPTowerSpec, tower: Tower) -> tuple[torch.nn.Module, ProjectionHead | None, CLIPConfig]:
    """Build one tower and its fine-tuning head (None without one) from a spec's ``weights``,
    ``architecture`` and ``head``; write the resolved architecture, head file and logit scale back
    into the spec (so saved files and search indexes record them)."""
    adopt_run(spec, tower)
    state, config = resolve_checkpoint(spec.weights, spec.architecture, spec.prefix)
    spec.architecture = config
    module = (TextTransformer(config.text, config.embed_dim) if tower == "text"
              else VisionTransformer(config.vision, config.embed_dim))
    if state is not None:
        weights = tower_state(state, tower, spec.weights)
        prefix = len(tower) + 1
        sfumato.load_into(module, {k[prefix:]: v for k, v in weights.items()}, source=str(spec.weights))
    head_state, head_source = _head_state(spec, state, tower)
    head = head_from_state(head_state, tower, head_source) if head_state is not None else None
    if spec.logit_scale is None:
        spec.logit_scale = _recorded_logit_scale(spec, state, head_state)
    return module, head, config


def _head_state(spec: CLIPTowerSpec, state: dict[str, Tensor] | None, tower: Tower) -> tuple[dict | None, str]:
    """The state dict holding this tower's head and its source: ``spec.head``, else the weights
    themselves, else a ``heads.safetensors`` inside a weights folder (that file becomes ``spec.head``)."""
    if spec.head is None and spec.weights and Path(spec.weights).is_dir() and (Path(spec.weights) / HEADS_FILE).is_file():
        spec.head = str(Path(spec.weights) / HEADS_FILE)
    if spec.head is not None:
        return sfumato.load_weights(spec.head), str(spec.head)
    if state is not None and f"{HEAD_PREFIX[tower]}proj.weight" in state:
        return state, str(spec.weights)
    return None, ""


def _recorded_logit_scale(spec: CLIPTowerSpec, state: dict[str, Tensor] | None, head_state: dict | None) -> float | None:
    """The log logit scale the files record: the heads' temperature, the CLIP file's
    ``logit_scale``, or the spec saved with a tower file (``sfumato.save_component``)."""
    if head_state is not None and heads_logit_scale(head_state) is not None:
        return heads_logit_scale(head_state)
    if state is not None and "logit_scale" in state:
        return float(state["logit_scale"])
    value = read_component_spec_value(spec.weights, "logit_scale") if spec.weights else None
    return float(value) if isinstance(value, (int, float)) else None


def projection_head(in_dim: int, out_dim: int, dropout: float = 0.1) -> ProjectionHead:
    """A fresh fine-tuning head (``train-clip-finetune`` reaches it as the encoders' ``projection_head``)."""
    return ProjectionHead(in_dim, out_dim, dropout)


#: A transformers tokenizer without ``tokenizer.json`` (Stable Diffusion's ``tokenizer/`` folder).
VOCAB_FILES = ("vocab.json", "merges.txt")


def resolve_tokenizer_name(tokenizer: str | None, weights: str | None) -> str:
    """The tokenizer a text spec means: explicit, else the one that came with the weights (a
    ``tokenizer.json`` beside the file or in the folder; a folder's ``vocab.json`` + ``merges.txt``;
    the ``tokenizer/`` sibling of a diffusers ``text_encoder/`` folder), else the bundled BPE."""
    if tokenizer is not None:
        return tokenizer
    if weights:
        path = Path(weights)
        folders = [path, path.parent / "tokenizer"] if path.is_dir() else [path.parent]
        for folder in folders:
            if (folder / "tokenizer.json").is_file():
                return str(folder / "tokenizer.json")
            if all((folder / name).is_file() for name in VOCAB_FILES):
                return str(folder)
    return BUILTIN


class CLIPTextEncoder(sfumato.Encoder):
    """Captions -> ``EncoderOutput(tokens [B, 77, D], pooled [B, E], mask [B, 77])``.

    ``tokens`` are the (final-LayerNorm'd) states of the chosen layer, what a U-Net
    cross-attends to; ``pooled`` is the projected end-of-text state used for similarity, through
    the fine-tuning head when there is one.
    """

    modality: ClassVar[Literal["text"]] = "text"
    Spec = CLIPTextSpec
    projection_head = staticmethod(projection_head)

    def __init__(self, spec: CLIPTextSpec):
        super().__init__()
        self.text, self.text_head, config = build_tower(spec, "text")
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
        check_head(self.text_head, self.text.embed_dim, spec)

    @property
    def head(self) -> ProjectionHead | None:
        return self.text_head

    @property
    def embed_dim(self) -> int:
        return self.text_head.norm.normalized_shape[0] if self.text_head is not None else self.text.embed_dim

    @property
    def logit_scale(self) -> float | None:
        """The learned log logit scale of the CLIP this tower belongs to (None when unknown)."""
        return self.spec.logit_scale

    def encode(self, inputs: list[str]) -> EncoderOutput:
        batch = self.tokenizer(inputs)
        device = _device(self)
        out = self.text(batch.input_ids.to(device), layer=self.layer, normalize_tokens=self.spec.final_norm)
        pooled = self.text_head(out.pooled) if self.text_head is not None else out.pooled
        return EncoderOutput(tokens=out.tokens, pooled=pooled, mask=batch.mask.to(device))

    # -- adapters (sfumato.adapter) -------------------------------------------------------------

    def foreign_module_names(self, format: str) -> dict[str, sfumato.AdapterTarget] | None:
        """The linear layers of the text tower under transformers' ``CLIPTextModel`` names, for
        adapters written for it (``format="diffusers"``; None for other formats), with the
        ``text_model.`` prefix of transformers 4 and without it (transformers 5): ``out_proj``,
        ``fc1`` and ``fc2`` are layers of their own; ``q_proj``, ``k_proj`` and ``v_proj`` are row
        ranges of sfumato's fused ``qkv`` (``conversion.py`` maps checkpoints the same way)."""
        from .conversion import _LAYER_RENAMES, _QKV

        if format != "diffusers":
            return None
        width = self.text.config.width
        linear = {name for name, module in self.named_modules() if isinstance(module, torch.nn.Linear)}
        names: dict[str, sfumato.AdapterTarget] = {}
        for i, prefix in ((i, p) for i in range(len(self.text.blocks)) for p in ("text_model.", "")):
            theirs, ours = f"{prefix}encoder.layers.{i}", f"text.blocks.{i}"
            for j, projection in enumerate(_QKV):
                names[f"{theirs}.self_attn.{projection}"] = sfumato.AdapterTarget(
                    f"{ours}.attn.qkv", (j * width, (j + 1) * width))
            for their_name, our_name in _LAYER_RENAMES.items():
                if f"{ours}.{our_name}" in linear:
                    names[f"{theirs}.{their_name}"] = sfumato.AdapterTarget(f"{ours}.{our_name}")
        return names

    def add_tokens(self, vectors: dict[str, Tensor]) -> None:
        """Bind trigger words to embedding vectors (textual inversion): each ``[n, width]`` tensor
        adds ``n`` tokens, which a prompt's trigger becomes (see ``trigger_words.py``)."""
        from .trigger_words import TriggerBinding

        binding = self.__dict__.get("_trigger_binding") or TriggerBinding(self.tokenizer, self.text.token_embedding)
        self.tokenizer = binding.add(vectors)  # changes nothing when it raises
        self.__dict__["_trigger_binding"] = binding

    def remove_tokens(self, triggers: list[str]) -> None:
        """Unbind trigger words ``add_tokens`` bound; the last one restores the original
        tokenizer and token embedding table (the same parameter)."""
        binding = self.__dict__.get("_trigger_binding")
        if binding is not None:
            self.tokenizer = binding.remove(triggers)
            if not binding.vectors:
                del self.__dict__["_trigger_binding"]


class CLIPImageEncoder(sfumato.Encoder):
    """Images ``[B, 3, H, W]`` in [-1, 1] -> ``EncoderOutput(tokens [B, 1 + N, D], pooled [B, E])``.

    Resizing (shorter side, bicubic, centre crop) and the CLIP mean/std normalisation happen
    here, differentiably, so guidance methods can back-propagate to the pixels. Image files read
    with ``images.pixel_values`` (exactly transformers' ``CLIPImageProcessor``) go through
    ``encode_pixels``.
    """

    modality: ClassVar[Literal["image"]] = "image"
    Spec = CLIPImageSpec
    projection_head = staticmethod(projection_head)

    def __init__(self, spec: CLIPImageSpec):
        super().__init__()
        self.vision, self.image_head, _ = build_tower(spec, "vision")
        check_head(self.image_head, self.vision.embed_dim, spec)

    @property
    def head(self) -> ProjectionHead | None:
        return self.image_head

    @property
    def embed_dim(self) -> int:
        return self.image_head.norm.normalized_shape[0] if self.image_head is not None else self.vision.embed_dim

    @property
    def image_size(self) -> int:
        return self.vision.config.image_size

    @property
    def logit_scale(self) -> float | None:
        """The learned log logit scale of the CLIP this tower belongs to (None when unknown)."""
        return self.spec.logit_scale

    def encode(self, inputs: Tensor) -> EncoderOutput:
        weight = self.vision.patch_embed.weight
        return self.encode_pixels(normalize_for_clip(inputs.to(weight.device, weight.dtype), self.image_size))

    def encode_pixels(self, pixels: Tensor) -> EncoderOutput:
        """``[B, 3, S, S]`` already resized and standardised (``images.pixel_values``, or
        transformers' ``pixel_values``) -> the encoder's output."""
        weight = self.vision.patch_embed.weight
        out = self.vision(pixels.to(weight.device, weight.dtype))
        pooled = self.image_head(out.pooled) if self.image_head is not None else out.pooled
        return EncoderOutput(tokens=out.tokens, pooled=pooled)


def check_head(head: ProjectionHead | None, width: int, spec: CLIPTowerSpec) -> None:
    """A head must take the tower's pooled width."""
    if head is not None and head.proj.in_features != width:
        raise sfumato.WeightsError(f"{spec.head or spec.weights}: its {spec.type} head takes {head.proj.in_features}-wide "
                                   f"embeddings but the tower of {spec.weights} makes {width}-wide ones; give the heads "
                                   "of a run fine-tuned on these towers")
