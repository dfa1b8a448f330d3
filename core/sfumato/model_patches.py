"""Model patches: named points inside a denoiser where one forward can run differently.

A denoiser advertises its **points** (``Denoiser.perturbation_points()``: module name -> kind), the
modules that inherit ``PatchPoint``; their names are the module paths (the U-Net's, diffusers' own:
``mid_block.attentions.0.transformer_blocks.0.attn1``). A **patch** is a function run at a point
instead of the module's own computation, for the forwards inside ``patched(denoiser, ...)`` and
for some rows of their batch, so that a guidance method gets a perturbed prediction as more rows
of the forward it shares with classifier-free guidance (``sfumato.branches``). Kinds of point and
what their patch functions are given:

``self-attention`` / ``cross-attention`` (``AttentionPatch``)
    ``patch(q, k, v, attend, size) -> out``, each ``[b, heads, tokens, head_dim]``, ``attend`` the
    point's own attention (its mask bound) and ``size`` the ``(height, width)`` of the image
    tokens, or None where the model does not know it (then the tokens are a square, if any
    shape). PAG returns ``v`` (identity attention); SEG attends with blurred queries.
``block`` (``BlockPatch``)
    ``patch(forward, x, *args) -> out``: ``forward`` runs the block, ``x`` ``[b, tokens, dim]`` its
    hidden states and ``args`` the rest of its inputs. Skip-layer guidance returns ``x``; a step
    cache would return a stored output, token merging would call ``forward`` on fewer tokens.
``deep-branch`` (``BlockPatch``, same signature)
    A U-Net's whole computation below one resolution level: ``forward(h, *args)`` runs the down
    blocks from that level on, the middle block and the matching up blocks, skip connections
    included, and returns what enters the up block of the level above. ``h`` ``[b, C, H, W]`` is
    the downsampled feature map it starts from. DeepCache (Ma et al. 2023) returns a stored
    output on most steps; the U-Net names these points ``deep.0`` (below the first level: the
    most work) to ``deep.{levels - 2}``.

Rows: a ``PointPatch`` applies to a ``slice`` of the batch (None: all of it); the point runs its
own computation on the other rows, separately, as diffusers' PAG processors do. A patch of every
row (a speedup's) and patches of some rows (a guidance branch's) combine: the row patches run on
their rows and the whole-batch patch stands for the point's own computation on the rest. Without a patch a
point runs exactly its unpatched code (outputs and state-dict keys are unchanged).

Patches live on the modules while the ``with`` block runs (as diffusers' attention processors
do), so two threads must not patch one denoiser at once.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import SpecError

SELF_ATTENTION = "self-attention"
CROSS_ATTENTION = "cross-attention"
BLOCK = "block"
DEEP_BRANCH = "deep-branch"

#: ``patch(q, k, v, attend, size) -> out`` at an attention point (see the module docstring).
AttentionPatch = Callable[[Tensor, Tensor, Tensor, Callable[[Tensor, Tensor, Tensor], Tensor],
                           "tuple[int, int] | None"], Tensor]
#: ``patch(forward, x, *args) -> out`` at a block point.
BlockPatch = Callable[..., Tensor]


@dataclass(frozen=True)
class PointPatch:
    """A patch function for one point and the batch rows it applies to (None: every row)."""

    function: Callable[..., Tensor]
    rows: slice | None = None


class PatchPoint:
    """Mixin of a module that is a perturbation point; set ``point_kind`` (a class attribute, or
    in ``__init__`` when it depends on the instance: ``Attention`` is self- or cross-attention).

    The module's forward routes the computation a patch may replace through ``run_attention``
    (attention points) or ``run_block`` (block points); both run it unchanged when no patch is
    applied."""

    point_kind: str = BLOCK
    #: The patches applied now (set by ``patched`` on the instance, for the ``with`` block only).
    point_patches: tuple[PointPatch, ...] = ()

    def run_attention(self, attend: Callable[..., Tensor], q: Tensor, k: Tensor, v: Tensor,
                      size: tuple[int, int] | None = None, mask: Tensor | None = None) -> Tensor:
        """``attend(q, k, v)`` (``attend(q, k, v, attn_mask=mask)`` with a ``mask``), or the applied
        patches' results on their rows. ``q`` ``[B, heads, N, d]``; ``mask`` broadcasts to the
        scores ``[B, heads, N, L]`` and is split with the rows when it has the batch's size."""
        if not self.point_patches:
            return attend(q, k, v) if mask is None else attend(q, k, v, attn_mask=mask)
        batch = q.shape[0]

        def attend_rows(rows: slice) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
            if mask is None:
                return attend
            return partial(attend, attn_mask=mask[rows] if mask.ndim == 4 and mask.shape[0] == batch else mask)

        return by_rows(self.point_patches, batch, lambda rows: attend_rows(rows)(q[rows], k[rows], v[rows]),
                       lambda patch, rows: patch(q[rows], k[rows], v[rows], attend_rows(rows), size))

    def run_block(self, forward: Callable[..., Tensor], x: Tensor, *args: object) -> Tensor:
        """``forward(x, *args)``, or the applied patches' results on their rows. Arguments whose
        first dimension is the batch's are split with ``x``; the others are passed whole."""
        if not self.point_patches:
            return forward(x, *args)
        batch = x.shape[0]

        def rows_of(rows: slice) -> tuple[Tensor, list[object]]:
            return x[rows], [a[rows] if isinstance(a, Tensor) and a.ndim and a.shape[0] == batch else a for a in args]

        def own(rows: slice) -> Tensor:
            x_rows, rest = rows_of(rows)
            return forward(x_rows, *rest)

        def patched_rows(patch: BlockPatch, rows: slice) -> Tensor:
            x_rows, rest = rows_of(rows)
            return patch(forward, x_rows, *rest)

        return by_rows(self.point_patches, batch, own, patched_rows)


def by_rows(patches: Sequence[PointPatch], batch: int, own: Callable[[slice], Tensor],
            patched: Callable[[Callable[..., Tensor], slice], Tensor]) -> Tensor:
    """The batch's output assembled from contiguous row ranges: each patch's rows from
    ``patched(function, rows)``, the rows no patch covers from ``own(rows)`` (or from the patch of
    every row, when there are also patches of some rows), concatenated in order."""
    whole = [patch for patch in patches if patch.rows is None]
    if len(whole) > 1:
        raise ValueError(f"{len(whole)} model patches apply to every row of one point (two speedups patching the same "
                         "points?); at most one may")
    if whole and len(whole) < len(patches):  # a patch of every row is the point's own computation elsewhere
        default = whole[0].function
        patches = [patch for patch in patches if patch.rows is not None]
        own = partial(patched, default)
    spans = sorted((((patch.rows or slice(0, batch)).indices(batch)[:2], patch.function) for patch in patches),
                   key=lambda span: span[0])
    parts, start = [], 0
    for (first, stop), function in spans:
        if first < start:
            raise ValueError(f"model patches overlap at rows {first} to {start} of a batch of {batch}")
        if first > start:
            parts.append(own(slice(start, first)))
        parts.append(patched(function, slice(first, stop)))
        start = stop
    if start < batch:
        parts.append(own(slice(start, batch)))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def perturbation_points(model: nn.Module) -> dict[str, str]:
    """Every point of ``model``: module name -> kind, in module order."""
    return {name: module.point_kind for name, module in model.named_modules() if isinstance(module, PatchPoint)}


@contextmanager
def patched(model: nn.Module, patches: Mapping[str, Sequence[PointPatch]]) -> Iterator[None]:
    """Apply ``patches`` (point name -> its patches) to ``model``'s points for the forwards inside
    the block; on leaving, the points are as they were (nested blocks add to each other's patches).

    :raises KeyError: for a name that is not a point of ``model``.
    """
    modules = dict(model.named_modules())
    applied: list[tuple[PatchPoint, tuple[PointPatch, ...] | None]] = []
    try:
        for name, point_patches in patches.items():
            module = modules.get(name)
            if not isinstance(module, PatchPoint):
                raise KeyError(f"{name!r} is not a perturbation point of this {type(model).__name__}")
            before = module.__dict__.get("point_patches")
            applied.append((module, before))
            module.point_patches = (*(before or ()), *point_patches)
        yield
    finally:
        for module, before in reversed(applied):
            if before is None:
                del module.point_patches
            else:
                module.point_patches = before


def select_points(points: Mapping[str, str], layers: Sequence[str], kind: str, where: str) -> list[str]:
    """The names of the ``kind`` points that the patterns ``layers`` select, in model order.

    A pattern is a regular expression searched in the point names, as diffusers'
    ``pag_applied_layers`` are (``"mid"``, ``"down_blocks.2"``, ``"up_blocks.1.attentions.0"``),
    except that a pattern ending in a digit does not run on into more digits (``blocks.1`` does
    not select ``blocks.10``).

    :param where: the spec location named in errors (``"[[guidance]] pag layers"``).
    :raises SpecError: for a pattern that selects nothing, listing the model's points of ``kind``.
    """
    candidates = [name for name, point_kind in points.items() if point_kind == kind]
    selected: set[str] = set()
    for pattern in layers:
        matches = {name for name in candidates if re.search(pattern + r"(?!\d)", name)}
        if not matches:
            listed = ", ".join(candidates[:12]) + (f" and {len(candidates) - 12} more" if len(candidates) > 12 else "")
            raise SpecError(f"{where}: {pattern!r} matches no {kind} point of the [denoiser]; its {kind} points are "
                            + (listed or "none (this denoiser advertises no such points)"))
        selected |= matches
    return [name for name in candidates if name in selected]
