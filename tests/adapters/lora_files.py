"""Random LoRAs for the tiny SD pipeline, written in the layouts trainers use, and merged into
diffusers' own modules as the reference (``W + scale * alpha / rank * up @ down``, computed here
directly: the PEFT in the index is too old for transformers 5's integration).

A LoRA is ``{(component, diffusers module name): Factors}``; ``component`` is ``unet`` or
``text_encoder`` and the names are those of diffusers' ``UNet2DConditionModel`` and transformers'
``CLIPTextModel``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn


@dataclass
class Factors:
    down: Tensor  # (r, in) or (r, in, kh, kw)
    up: Tensor  # (out, r) or (out, r, 1, 1)
    alpha: float


LoRA = dict[tuple[str, str], Factors]


def random_lora(models: dict[str, nn.Module], rank: int, alpha: float, seed: int, std: float = 0.15,
                every: int = 1) -> LoRA:
    """Factors for every ``every``-th linear and convolution layer of each model (convolutions
    LoCon-style: a ``kh x kw`` down, a 1x1 up)."""
    g = torch.Generator().manual_seed(seed)
    lora: LoRA = {}
    for component, model in models.items():
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        for name, module in layers[::every]:
            w = module.weight
            down_shape = (rank, *w.shape[1:])
            up_shape = (w.shape[0], rank, 1, 1) if w.ndim == 4 else (w.shape[0], rank)
            lora[(component, name)] = Factors(torch.randn(down_shape, generator=g) * std,
                                              torch.randn(up_shape, generator=g) * std, alpha)
    return lora


def write_peft(lora: LoRA, path: Path, text_prefix: str = "text_model.") -> Path:
    """diffusers / PEFT keys (``unet.<m>.lora_A.weight``), alpha in ``lora_adapter_metadata``
    (one alpha per component, as ``save_lora_weights`` writes it); text encoder names carry the
    ``text_model.`` prefix of transformers 4 unless ``text_prefix`` says otherwise."""
    tensors, metadata = {}, {}
    for (component, name), f in lora.items():
        name = text_prefix + name if component == "text_encoder" else name
        tensors[f"{component}.{name}.lora_A.weight"] = f.down
        tensors[f"{component}.{name}.lora_B.weight"] = f.up
        metadata.update({f"{component}.lora_alpha": f.alpha, f"{component}.r": f.down.shape[0]})
    save_file(tensors, str(path), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(metadata)})
    return path


def write_kohya(lora: LoRA, path: Path) -> Path:
    """kohya / WebUI keys: ``lora_unet_<m with _>.lora_down.weight`` / ``lora_up`` / ``alpha``,
    ``lora_te_text_model_...`` for the text encoder."""
    tensors = {}
    for (component, name), f in lora.items():
        key = "lora_unet_" + name.replace(".", "_") if component == "unet" else \
            "lora_te_text_model_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = f.down
        tensors[f"{key}.lora_up.weight"] = f.up
        tensors[f"{key}.alpha"] = torch.tensor(f.alpha)
    save_file(tensors, str(path))
    return path


def write_diffusers_old(lora: LoRA, path: Path) -> Path:
    """diffusers' layout before PEFT: ``unet.<m>.lora.down.weight``, alpha per layer."""
    tensors = {}
    for (component, name), f in lora.items():
        name = "text_model." + name if component == "text_encoder" else name
        tensors[f"{component}.{name}.lora.down.weight"] = f.down
        tensors[f"{component}.{name}.lora.up.weight"] = f.up
        tensors[f"{component}.{name}.alpha"] = torch.tensor(f.alpha)
    save_file(tensors, str(path))
    return path


@torch.no_grad()
def merge(models: dict[str, nn.Module], lora: LoRA, scale: float) -> None:
    """``W += scale * alpha / rank * up @ down`` on the reference (diffusers) modules."""
    for (component, name), f in lora.items():
        weight = models[component].get_submodule(name).weight
        change = f.up.flatten(1) @ f.down.flatten(1)  # (out, in * kh * kw)
        weight += (scale * f.alpha / f.down.shape[0] * change).reshape(weight.shape)
