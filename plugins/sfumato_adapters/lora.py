"""The ``lora`` adapter: a LoRA file (``lora_formats.py``) applied to the denoiser and the text
encoder, fused into their weights or added at run time (``sfumato.patch_weight``).

Each layer of the file is found through the component's ``foreign_module_names("diffusers")``
(kohya's names are those with ``.`` written ``_``); everything is checked before any weight
changes: layers for components the pipeline lacks, names no layer has, and shapes that do not
fit are one error listing them, worded as "made for another architecture" when the file says
which (SDXL's second text encoder, the LDM block names kohya writes for SDXL, other widths).
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any, ClassVar, Literal, Mapping

import sfumato
from pydantic import Field

from .lora_formats import COMPONENT_TABLES, LoRALayer, listed, read_lora
from .lora_training import TrainableLoRA

#: Tables a LoRA may target, and how messages name them.
TARGETS = {"denoiser": "denoiser", "text_encoder": "text encoder"}
#: kohya's names for U-Net blocks in the original LDM layout, which it writes for SDXL.
LDM_BLOCKS = ("input_blocks_", "middle_block_", "output_blocks_")


class LoRASpec(sfumato.AdapterSpec):
    type: Literal["lora"] = "lora"
    scale: float = Field(1.0, description="How strongly the LoRA acts: each layer changes by scale * alpha / rank * "
                         "up @ down (1: as trained; 0: not at all; negative values invert it).")
    targets: list[Literal["denoiser", "text_encoder"]] | None = Field(
        None, min_length=1, description="Only the layers of these tables ('denoiser', 'text_encoder'). None: "
        "every table the file has layers for.")
    fuse: bool = Field(True, description="Merge into the weights (no cost per step; a new scale merges again from "
                       "the kept original weights) rather than add the change at every call (false).")


class LoRA(sfumato.Adapter):
    """A LoRA file's layers as weight patches on the pipeline's components.

    ``LoRA.Trainable`` (``lora_training.TrainableLoRA``) is how other plugins train one: a
    training recipe reaches it as ``sfumato.get_registry().get("adapter", "lora").Trainable``
    and saves files this type reads.
    """

    Spec: ClassVar[type[LoRASpec]] = LoRASpec
    Trainable: ClassVar[type[TrainableLoRA]] = TrainableLoRA

    def __init__(self, spec: LoRASpec):
        super().__init__(spec)
        self.layers = read_lora(spec.weights)
        self.patches: list[sfumato.WeightPatch] = []

    def apply(self, components: Mapping[str, Any]) -> None:
        planned = self._plan(components)
        self.patches = [
            sfumato.patch_weight(module, partial(layer.delta, shape), rows, self.spec.scale, self.spec.fuse)
            for module, rows, shape, layer in planned
        ]

    def _plan(self, components: Mapping[str, Any]) -> list[tuple[Any, tuple[int, int] | None, tuple[int, ...], LoRALayer]]:
        """``(module, rows, weight shape, layer on the module's device)`` for every layer to apply;
        a ``WeightsError`` listing every layer that has no place."""
        by_table: dict[str | None, list[LoRALayer]] = defaultdict(list)
        for layer in self.layers:
            by_table[COMPONENT_TABLES[layer.component]].append(layer)
        wanted = self.spec.targets or list(TARGETS)
        problems, unplaced, misfits = [], [], []
        hints = self._architecture_hints(by_table)
        for table in self.spec.targets or ():
            if not by_table.get(table):
                problems.append(f"targets names {table!r} but the file has no {TARGETS[table]} layers")
        planned = []
        for table, layers in by_table.items():
            if table is None:
                problems.append(f"{len(layers)} layer(s) for a second text encoder (lora_te2_, text_encoder_2), which "
                                "SDXL has and this pipeline does not")
                continue
            if table not in wanted:
                continue
            component = components.get(table)
            if component is None:
                problems.append(f"{len(layers)} {TARGETS[table]} layer(s), but the pipeline has no [{table}]")
                continue
            names = sfumato.foreign_module_names(component, "diffusers", table)
            kohya = {name.replace(".", "_"): target for name, target in names.items()}
            modules = dict(component.named_modules())
            for layer in layers:
                target = (names if layer.naming == "diffusers" else kohya).get(layer.module)
                if target is None:
                    unplaced.append(layer.name)
                    continue
                module = modules[target.module]
                shape = tuple(module.weight.shape)
                if target.rows is not None:
                    shape = (target.rows[1] - target.rows[0], *shape[1:])
                if not layer.fits(shape):
                    misfits.append(f"{layer.name} makes {list(layer.shape)}, the layer {target.module} is {list(shape)}")
                    continue
                planned.append((module, target.rows, shape, layer.to(module.weight.device)))
        if unplaced:
            problems.append(f"{len(unplaced)} layer(s) name no layer of this pipeline: {listed(unplaced)}")
        if misfits:
            problems.append(f"{len(misfits)} layer(s) do not fit their layer's shape: {listed(misfits)}")
            hints.append("its layer shapes are another model's")
        if problems:
            headline = (f"a LoRA for another architecture than this pipeline's ({'; '.join(hints)})"
                        if hints else "this LoRA does not fit the pipeline")
            raise sfumato.WeightsError(f"{self.spec.weights}: {headline}: " + "; ".join(problems))
        return planned

    @staticmethod
    def _architecture_hints(by_table: Mapping[str | None, list[LoRALayer]]) -> list[str]:
        """What in the file says it was made for another model family."""
        hints = []
        if by_table.get(None):
            hints.append("it has layers for SDXL's second text encoder")
        if any(layer.naming == "kohya" and layer.module.startswith(LDM_BLOCKS) for layer in by_table.get("denoiser", [])):
            hints.append("its U-Net layers have the LDM names (input_blocks, middle_block, output_blocks) kohya "
                         "writes for SDXL")
        return hints

    def set_scale(self, scale: float) -> None:
        self.spec.scale = scale
        for patch in self.patches:
            patch.set(scale=scale)

    def remove(self) -> None:
        for patch in self.patches:
            patch.remove()
        self.patches = []
