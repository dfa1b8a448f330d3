"""Weight patches: ``weight[rows] + scale * delta()`` on one layer, from any number of adapters.

A patch is either **fused**, merged into the stored weight (the layer then runs exactly as fast as
without it), or **unfused**, added at every use of the weight through a
``torch.nn.utils.parametrize`` parametrization (the stored weight untouched; scales change for
free; the delta is recomputed at each call, which costs a rank-r matmul per LoRA layer).

Unfused patches act on the weight rather than by a hook on the layer's output because layers are
not always called: sfumato's U-Net runs self-attention's q, k and v as one matmul of the stacked
weights, and its CLIP keeps q, k and v as one fused layer, so an output hook would be skipped or
act on the wrong rows; every layer does read its weight.

Merging never subtracts: the first fused patch keeps a copy of the original weight, every change
merges again from that copy (``original + sum of the fused patches``), and removing the last one
copies it back, so the weights return bit for bit. The copy costs the memory of the patched
layers once.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

#: The attribute of a patched layer that holds its ``PatchedLayer``.
STATE = "_sfumato_weight_patches"


class WeightPatch:
    """One adapter's change to one layer's weight (``patch_weight`` makes it).

    :param delta: returns the change at scale 1 as float32, shaped like ``weight[rows]``.
    :param rows: ``(start, stop)`` output rows of the weight it changes (None: all).
    """

    def __init__(self, module: nn.Module, delta: Callable[[], Tensor], rows: tuple[int, int] | None,
                 scale: float, fused: bool):
        self.module, self.delta, self.rows = module, delta, rows
        self.scale, self.fused = scale, fused

    def set(self, scale: float | None = None, fused: bool | None = None) -> None:
        """Change the scale or the mode; the layer's weight follows at once."""
        self.scale = self.scale if scale is None else scale
        self.fused = self.fused if fused is None else fused
        _layer(self.module).refresh()

    def remove(self) -> None:
        """Take this patch off; the last one off restores the original weight exactly."""
        layer = _layer(self.module)
        layer.patches.remove(self)
        layer.refresh()

    def added_to(self, weight: Tensor) -> Tensor:
        """``weight`` with this patch added (out of place: autograd and parametrizations allow it)."""
        change = (self.scale * self.delta()).to(device=weight.device, dtype=weight.dtype)
        if self.rows is None:
            return weight + change
        start, stop = self.rows
        return weight.slice_scatter(weight[start:stop] + change, dim=0, start=start, end=stop)


class PatchedLayer:
    """The patches of one layer, and its original weight while any of them is fused."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.patches: list[WeightPatch] = []
        self.original: Tensor | None = None
        self.order: list[str] = []  # the layer's parameter names, in order, while unfused patches act

    def stored_weight(self) -> nn.Parameter:
        """The weight as stored (under a parametrization: its ``original``)."""
        if parametrize.is_parametrized(self.module, "weight"):
            return self.module.parametrizations.weight.original
        return self.module.weight

    def refresh(self) -> None:
        """Merge the fused patches into the stored weight (from the kept original) and install or
        remove the parametrization that adds the unfused ones."""
        stored = self.stored_weight()
        fused = [p for p in self.patches if p.fused]
        with torch.no_grad():
            if fused:
                if self.original is None:
                    self.original = stored.detach().clone()
                merged = self.original.to(torch.promote_types(self.original.dtype, torch.float32), copy=True)
                for patch in fused:
                    merged = patch.added_to(merged)
                stored.copy_(merged)
            elif self.original is not None:
                stored.copy_(self.original)
                self.original = None
        unfused = any(not p.fused for p in self.patches)
        ours = parametrize.is_parametrized(self.module, "weight")
        if unfused and not ours:
            self.order = list(self.module._parameters)
            parametrize.register_parametrization(self.module, "weight", UnfusedPatches(self), unsafe=True)
        elif ours and not unfused:
            parametrize.remove_parametrizations(self.module, "weight", leave_parametrized=False)
            parameters = dict(self.module._parameters)  # weight came back last: restore the order
            self.module._parameters.clear()
            self.module._parameters.update({name: parameters[name] for name in self.order})
        if not self.patches:
            delattr(self.module, STATE)


class UnfusedPatches(nn.Module):
    """The parametrization that adds a layer's unfused patches to its weight at every use."""

    def __init__(self, layer: PatchedLayer):
        super().__init__()
        self.layer = [layer]  # in a list: a plain reference, not a sub-module or a cycle of modules

    def forward(self, weight: Tensor) -> Tensor:
        for patch in self.layer[0].patches:
            if not patch.fused:
                weight = patch.added_to(weight)
        return weight


def _layer(module: nn.Module) -> PatchedLayer:
    return getattr(module, STATE)


def patch_weight(module: nn.Module, delta: Callable[[], Tensor], rows: tuple[int, int] | None = None,
                 scale: float = 1.0, fused: bool = True) -> WeightPatch:
    """Add ``scale * delta()`` to ``module.weight`` (or to its output ``rows``), fused into the
    weight or added at every use; returns the patch, which ``set`` changes and ``remove`` undoes.

    The layer must not already carry a parametrization of its weight that is not sfumato's.
    """
    if parametrize.is_parametrized(module, "weight") and not hasattr(module, STATE):
        raise ValueError(f"{type(module).__name__}.weight already has a parametrization; adapters cannot patch it")
    layer = module.__dict__.get(STATE)
    if layer is None:
        layer = PatchedLayer(module)
        object.__setattr__(module, STATE, layer)
    patch = WeightPatch(module, delta, rows, scale, fused)
    layer.patches.append(patch)
    layer.refresh()
    return patch
