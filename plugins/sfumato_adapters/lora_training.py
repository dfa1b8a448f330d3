"""Trainable LoRA factors on a pipeline's components, and the files trainers write from them.

``TrainableLoRA.for_components`` puts a rank-r pair of factors on every chosen layer of the
denoiser (and the text encoder): ``down`` (A) ``[r, in]`` drawn as PEFT draws it (Kaiming
uniform, bound ``1 / sqrt(in)``), ``up`` (B) ``[out, r]`` zero, so training starts from the base
model exactly (Hu et al. 2021, https://arxiv.org/abs/2106.09685, section 4.1). Convolutions get
LoCon factors: ``down`` ``[r, in, kh, kw]``, ``up`` ``[out, r, 1, 1]``.

``attach`` adds ``alpha / rank * up @ down`` to each layer's weight unfused
(``sfumato.patch_weight(fused=False)``), so gradients reach the factors while the base weights
stay frozen; the change is ``LoRALayer.delta``, the same code the ``lora`` adapter applies a file
with, so a saved file loads into the model that was trained. ``save`` writes the diffusers / PEFT
or the kohya / WebUI layout that ``read_lora`` reads (``lora_formats.py``).

Layers are chosen per table with ``target_modules``, PEFT's rule: a name matches a layer when it
equals the layer's diffusers / transformers name or is its last dotted part(s) (``to_k`` matches
``...attn2.to_k``); a group name stands for several (``TARGET_GROUPS``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import sfumato
import torch
from torch import Tensor, nn

from .lora_formats import METADATA_KEY, LoRALayer

#: Group name -> the layer names it stands for (suffixes, PEFT's rule), in the U-Net (diffusers'
#: names) and the CLIP text encoder (transformers').
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj"),
    "cross-attention": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
    "ff": ("ff.net.0.proj", "ff.net.2", "fc1", "fc2"),
    "proj": ("proj_in", "proj_out"),
    "conv": ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"),
}
#: A pipeline table -> how files name its component: (diffusers / PEFT prefix, kohya prefix).
FILE_NAMES: dict[str, tuple[str, str]] = {"denoiser": ("unet", "lora_unet_"), "text_encoder": ("text_encoder", "lora_te_")}
Layout = Literal["peft", "kohya"]


def expand_targets(names: Sequence[str]) -> list[str]:
    """Group names replaced by the layer names they stand for (order kept, no repeats)."""
    return list(dict.fromkeys(n for name in names for n in TARGET_GROUPS.get(name, (name,))))


def matches(layer: str, names: Sequence[str]) -> bool:
    """PEFT's ``target_modules`` rule: ``layer`` is one of ``names`` or ends with ``.name``."""
    return any(layer == name or layer.endswith("." + name) for name in names)


class LoRAFactors(nn.Module):
    """The two factors of one layer (``down`` A, ``up`` B) and where they go."""

    def __init__(self, table: str, module: str, target: sfumato.AdapterTarget, shape: tuple[int, ...], rank: int,
                 alpha: float, generator: torch.Generator):
        super().__init__()
        self.table, self.module, self.target, self.shape, self.alpha = table, module, target, shape, alpha
        out, fan_in = shape[0], math.prod(shape[1:])
        down = torch.empty(rank, *shape[1:]).uniform_(-1, 1, generator=generator) / math.sqrt(fan_in)  # (r, in[, kh, kw])
        self.down = nn.Parameter(down)
        self.up = nn.Parameter(torch.zeros(out, rank, *((1, 1) if len(shape) == 4 else ())))  # (out, r[, 1, 1])

    def layer(self) -> LoRALayer:
        """The factors as the ``lora`` adapter reads a layer (the live parameters, not copies)."""
        return LoRALayer(FILE_NAMES[self.table][0], self.module, "diffusers", [], self.down, self.up, self.alpha)


class TrainableLoRA(nn.Module):
    """Trainable LoRA factors for chosen layers of a pipeline's components.

    :param factors: one ``LoRAFactors`` per adapted layer.
    :param target_modules: per table, the layer names that chose them (recorded in PEFT metadata).
    """

    def __init__(self, factors: Sequence[LoRAFactors], rank: int, alpha: float,
                 target_modules: Mapping[str, list[str]] | None = None):
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.target_modules = dict(target_modules or {})  # table -> the layer names that chose its layers
        # Keys without dots (a ModuleDict's rule): the kohya spelling of each layer.
        self.factors = nn.ModuleDict({FILE_NAMES[f.table][1] + f.module.replace(".", "_"): f for f in factors})
        self.patches: list[sfumato.WeightPatch] = []

    @classmethod
    def for_components(cls, components: Mapping[str, nn.Module], targets: Mapping[str, Sequence[str]], rank: int,
                       alpha: float | None = None, seed: int = 0) -> TrainableLoRA:
        """Factors for the layers of each table in ``targets`` (``{"denoiser": ["attention"]}``)
        that the names match; ``alpha`` None is the rank (factor 1). A ``SpecError`` when a name
        matches no layer of its table, listing the groups and some layer names."""
        generator = torch.Generator().manual_seed(seed)
        alpha = float(rank if alpha is None else alpha)
        factors, chosen = [], {}
        for table, names in targets.items():
            if table not in FILE_NAMES:
                raise sfumato.SpecError(f"LoRA targets name the table {table!r}; LoRAs adapt {sorted(FILE_NAMES)}")
            component = components[table]
            foreign = sfumato.foreign_module_names(component, "diffusers", table)
            modules = dict(component.named_modules())
            layers: dict[sfumato.AdapterTarget, str] = {}
            for name, target in foreign.items():  # the first name of a layer (CLIP's with text_model.)
                layers.setdefault(target, name)
            unmatched = [n for n in names if not any(matches(layer, expand_targets([n])) for layer in layers.values())]
            if unmatched:
                raise sfumato.SpecError(
                    f"LoRA target_modules {unmatched} match no layer of [{table}]; give group names "
                    f"({', '.join(TARGET_GROUPS)}) or layer names (or their last parts), such as "
                    f"{', '.join(list(layers.values())[:4])}")
            wanted = expand_targets(names)
            chosen[table] = [n for n in wanted if any(matches(layer, [n]) for layer in layers.values())]
            for target, name in layers.items():
                if not matches(name, wanted):
                    continue
                weight = modules[target.module].weight
                shape = tuple(weight.shape)
                if target.rows is not None:
                    shape = (target.rows[1] - target.rows[0], *shape[1:])
                factors.append(LoRAFactors(table, name, target, shape, rank, alpha, generator))
        return cls(factors, rank, alpha, chosen)

    def tables(self) -> list[str]:
        return list(dict.fromkeys(f.table for f in self.factors.values()))

    def attach(self, components: Mapping[str, nn.Module]) -> None:
        """Add the factors' change to their layers, unfused (the base weights stay as they are)."""
        self.detach()
        for factors in self.factors.values():
            module = dict(components[factors.table].named_modules())[factors.target.module]
            layer = factors.layer()
            shape = factors.shape
            self.patches.append(sfumato.patch_weight(module, lambda layer=layer, shape=shape: layer.delta(shape),
                                                     factors.target.rows, 1.0, fused=False))

    def detach(self) -> None:
        """Take the factors off their layers (the weights return bit for bit)."""
        for patch in self.patches:
            patch.remove()
        self.patches = []

    def state_for(self, layout: Layout) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and metadata of a LoRA file in ``layout``: ``peft`` (diffusers:
        ``unet.<module>.lora_A.weight`` / ``lora_B.weight``, alpha and rank in the
        ``lora_adapter_metadata`` JSON as ``unet.lora_alpha``, ``unet.r``) or ``kohya``
        (``lora_unet_<module>.lora_down.weight`` / ``lora_up.weight`` / ``alpha``)."""
        tensors: dict[str, Tensor] = {}
        for key, factors in self.factors.items():
            down, up = factors.down.detach().float(), factors.up.detach().float()
            if layout == "peft":
                prefix = f"{FILE_NAMES[factors.table][0]}.{factors.module}"
                tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = down, up
            else:
                tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
                tensors[f"{key}.alpha"] = torch.tensor(factors.alpha)
        if layout == "peft":
            config: dict[str, Any] = {}
            for table in self.tables():
                name = FILE_NAMES[table][0]
                config.update({f"{name}.r": self.rank, f"{name}.lora_alpha": self.alpha,
                               f"{name}.target_modules": self.target_modules.get(table, [])})
            return tensors, {METADATA_KEY: json.dumps(config)}
        return tensors, {"ss_network_module": "networks.lora", "ss_network_dim": str(self.rank),
                         "ss_network_alpha": f"{self.alpha:g}"}

    def save(self, path: str | Path, layout: Layout = "peft", metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the factors as a ``.safetensors`` LoRA file in ``layout`` (float32), atomically."""
        tensors, meta = self.state_for(layout)
        return sfumato.save_weights(tensors, path, {**(metadata or {}), **meta})
