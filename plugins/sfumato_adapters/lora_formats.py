"""LoRA files as trainers write them, read into one ``LoRALayer`` per adapted layer.

A LoRA (Hu et al., https://arxiv.org/abs/2106.09685) changes a layer's weight by
``alpha / rank * up @ down`` (``up`` = B ``[out, r]``, ``down`` = A ``[r, in]``; a convolution's
``down`` is ``[r, in, kh, kw]`` and its ``up`` ``[out, r, 1, 1]``, LyCORIS' LoCon). The layouts:

==================  ======================================================  ==============================
layout              keys of one layer                                       alpha
==================  ======================================================  ==============================
diffusers / PEFT    ``unet.<module>.lora_A.weight``, ``.lora_B.weight``     ``lora_alpha`` (and
                    (``text_encoder.``: transformers' module names)         ``alpha_pattern``) in the
                                                                            ``lora_adapter_metadata``
                                                                            JSON; ``<module>.alpha``
diffusers (old)     ``unet.<module>.lora.down.weight``, ``.lora.up.weight``  ``<module>.alpha``
                    (``.lora_linear_layer.down/up.weight``)
kohya / WebUI       ``lora_unet_<module, dots as _>.lora_down.weight``,     ``<module>.alpha``
                    ``.lora_up.weight``; ``lora_te_`` / ``lora_te1_``
                    (text encoder), ``lora_te2_`` (SDXL's second)
==================  ======================================================  ==============================

Without an alpha, alpha is the rank (the factor is 1), as every trainer means it; PEFT's
``use_rslora`` divides by ``sqrt(rank)`` instead. Keys that are not LoRA weights are errors that
list them: other LyCORIS types (LoHa, LoKr), DoRA, LoCon's Tucker ``lora_mid`` and full
differences are named as such.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sfumato
import torch
from torch import Tensor

#: The file's name for a component -> the pipeline table it adapts (None: a component sfumato has not).
COMPONENT_TABLES: dict[str, str | None] = {
    "unet": "denoiser", "transformer": "denoiser", "text_encoder": "text_encoder", "text_encoder_2": None,
}
KOHYA_COMPONENTS = {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2"}
KOHYA = re.compile(r"^lora_(unet|te1|te2|te)_(\w+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
DIFFUSERS = re.compile(
    r"^(unet|transformer|text_encoder|text_encoder_2)\.(.+?)\."
    r"(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|"
    r"lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$"
)
ROLES = {"lora_A.weight": "down", "lora.down.weight": "down", "lora_linear_layer.down.weight": "down",
         "lora_down.weight": "down", "lora_B.weight": "up", "lora.up.weight": "up",
         "lora_linear_layer.up.weight": "up", "lora_up.weight": "up", "alpha": "alpha"}
#: Keys of adapters that are not LoRAs of this kind: (pattern, what they are).
OTHER_ADAPTERS = [
    (re.compile(r"\.hada_"), "LoHa weights (hada_*), another LyCORIS type"),
    (re.compile(r"\.lokr_"), "LoKr weights (lokr_*), another LyCORIS type"),
    (re.compile(r"\.(dora_scale|lora_magnitude_vector)"), "DoRA magnitudes (dora_scale), which the lora type does not apply"),
    (re.compile(r"\.lora_mid\."), "LoCon Tucker cores (lora_mid), which the lora type does not apply"),
    (re.compile(r"\.diff(_b)?$"), "full weight differences (diff)"),
    (re.compile(r"\.(lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up)\.bias$"), "LoRA biases, which the lora type does not apply"),
    (re.compile(r"^(emb_params|string_to_param|clip_[lg])"),
     "the vectors of a textual inversion embedding (load it with type = \"textual-inversion\")"),
]
METADATA_KEY = "lora_adapter_metadata"
SHOWN = 12


@dataclass
class LoRALayer:
    """One adapted layer of a LoRA file.

    :param component: the file's component (``unet``, ``text_encoder``, ``text_encoder_2``, ...).
    :param module: the layer's name in the file: diffusers' dotted name, or kohya's with ``_``.
    :param naming: ``"diffusers"`` (dots) or ``"kohya"`` (underscores).
    """

    component: str
    module: str
    naming: Literal["diffusers", "kohya"]
    keys: list[str] = field(default_factory=list)
    down: Tensor | None = None
    up: Tensor | None = None
    alpha: float | None = None
    rank_stabilised: bool = False

    @property
    def name(self) -> str:
        """How the file names the layer (its keys without the weight suffix)."""
        return self.keys[0].rsplit(".lora", 1)[0].removesuffix(".alpha")

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def factor(self) -> float:
        """``alpha / rank`` (``alpha / sqrt(rank)`` for rank-stabilised LoRA); 1 without an alpha."""
        if self.alpha is None:
            return 1.0
        return self.alpha / (math.sqrt(self.rank) if self.rank_stabilised else self.rank)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight change it makes: ``(out, in)`` or ``(out, in, kh, kw)``."""
        return (self.up.shape[0], *self.down.shape[1:])

    def fits(self, weight_shape: tuple[int, ...]) -> bool:
        """Whether the change fits a weight of ``weight_shape`` (a linear change fits a 1x1
        convolution and the other way round)."""
        def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
            return shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else tuple(shape)

        return squeezed(self.shape) == squeezed(tuple(weight_shape))

    def delta(self, weight_shape: tuple[int, ...]) -> Tensor:
        """``factor * up @ down`` as float32, shaped ``weight_shape``."""
        change = self.up.flatten(1).float() @ self.down.flatten(1).float()  # (out, r) @ (r, in*kh*kw)
        return (self.factor * change).reshape(weight_shape)

    def to(self, device: torch.device) -> LoRALayer:
        """A copy with its factors as float32 on ``device``."""
        return LoRALayer(self.component, self.module, self.naming, self.keys,
                         self.down.to(device, torch.float32), self.up.to(device, torch.float32), self.alpha,
                         self.rank_stabilised)


def listed(items: list[str]) -> str:
    """Up to ``SHOWN`` items, and how many more there are."""
    shown = ", ".join(items[:SHOWN])
    return shown + (f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def read_lora(path: str | Path) -> list[LoRALayer]:
    """The layers of a LoRA ``.safetensors`` file; a ``WeightsError`` naming the file and listing
    the keys when any key is not a LoRA weight, or a layer lacks its up or down matrix."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise sfumato.WeightsError(f"{path}: a LoRA must be a .safetensors file (a .pt, .bin or .ckpt is a pickle, "
                                   "which can run code: convert it to safetensors first)")
    state = sfumato.load_weights(path)
    if not state:
        raise sfumato.WeightsError(f"{path}: holds no tensors, so no LoRA weights")
    layers: dict[tuple[str, str], LoRALayer] = {}
    unknown: list[str] = []
    for key, value in state.items():
        kohya, diffusers = KOHYA.match(key), DIFFUSERS.match(key)
        if kohya:
            component, module, naming = KOHYA_COMPONENTS[kohya[1]], kohya[2], "kohya"
            role = ROLES[kohya[3]]
        elif diffusers:
            component, module, naming = diffusers[1], diffusers[2], "diffusers"
            role = ROLES[diffusers[3]]
        else:
            unknown.append(key)
            continue
        layer = layers.setdefault((component, module), LoRALayer(component, module, naming))
        layer.keys.append(key)
        if role == "alpha":
            layer.alpha = _alpha(value, key, path)
        else:
            setattr(layer, role, value)
    if unknown:
        raise sfumato.WeightsError(f"{path}: {_unknown_keys(unknown)}")
    _apply_metadata(list(layers.values()), sfumato.read_metadata(path), path)
    incomplete = [f"{layer.name} (no {'up' if layer.up is None else 'down'} matrix)"
                  for layer in layers.values() if layer.up is None or layer.down is None]
    if incomplete:
        raise sfumato.WeightsError(f"{path}: {len(incomplete)} LoRA layer(s) lack one of their two matrices: "
                                   f"{listed(incomplete)}")
    malformed = [f"{layer.name} (down {list(layer.down.shape)}, up {list(layer.up.shape)})"
                 for layer in layers.values() if not _well_formed(layer)]
    if malformed:
        raise sfumato.WeightsError(f"{path}: {len(malformed)} LoRA layer(s) have matrices that do not multiply (down "
                                   f"[r, in] or [r, in, kh, kw], up [out, r] or [out, r, 1, 1]): {listed(malformed)}")
    return list(layers.values())


def _alpha(value: Tensor, key: str, path: Path) -> float:
    if value.numel() != 1 or not torch.isfinite(value.float()).all():
        got = f"{float(value):g}" if value.numel() == 1 else f"shape {list(value.shape)}"
        raise sfumato.WeightsError(f"{path}: {key} must be one finite number, got {got}")
    return float(value.float())


def _well_formed(layer: LoRALayer) -> bool:
    down, up = layer.down, layer.up
    return (down.ndim in (2, 4) and up.ndim == down.ndim and up.shape[1] == down.shape[0]
            and (up.ndim == 2 or tuple(up.shape[2:]) == (1, 1)) and down.is_floating_point())


def _unknown_keys(unknown: list[str]) -> str:
    """The message for keys that are not LoRA weights: those of known other adapters by kind."""
    kinds: dict[str, list[str]] = {}
    for key in unknown:
        kind = next((what for pattern, what in OTHER_ADAPTERS if pattern.search(key)), "")
        kinds.setdefault(kind, []).append(key)
    parts = [f"{len(keys)} key(s) are {what}: {listed(keys)}" for what, keys in kinds.items() if what]
    if "" in kinds:
        parts.append(f"{len(kinds[''])} key(s) are not LoRA weights sfumato reads: {listed(kinds[''])}; LoRA keys look "
                     "like unet.<module>.lora_A.weight / lora_B.weight (diffusers, PEFT), unet.<module>.lora.down.weight "
                     "(older diffusers) or lora_unet_<module>.lora_down.weight / lora_up.weight / alpha (kohya, WebUI)")
    return "; ".join(parts)


def _apply_metadata(layers: list[LoRALayer], metadata: dict[str, str], path: Path) -> None:
    """The alphas PEFT records in ``lora_adapter_metadata`` (``unet.lora_alpha``,
    ``unet.alpha_pattern``, ``unet.use_rslora``), for layers that have no alpha key."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return
    try:
        config: Any = json.loads(raw)
    except ValueError:
        raise sfumato.WeightsError(f"{path}: its {METADATA_KEY} metadata is not JSON") from None
    if not isinstance(config, dict):
        raise sfumato.WeightsError(f"{path}: its {METADATA_KEY} metadata is not a JSON object")
    for layer in layers:
        prefix = f"{layer.component}."
        if config.get(prefix + "use_dora"):
            raise sfumato.WeightsError(f"{path}: a DoRA ({prefix}use_dora in its metadata), which the lora type does "
                                       "not apply")
        layer.rank_stabilised = bool(config.get(prefix + "use_rslora", False))
        if layer.alpha is not None or prefix + "lora_alpha" not in config:
            continue
        alpha = config[prefix + "lora_alpha"]
        for pattern, value in (config.get(prefix + "alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?({pattern})", layer.module):  # as PEFT matches its patterns
                alpha = value
                break
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise sfumato.WeightsError(f"{path}: {prefix}lora_alpha in its metadata must be a number, got {alpha!r}")
        layer.alpha = float(alpha)
