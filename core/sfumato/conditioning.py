"""``Conditioning``: what a denoiser is conditioned on, and its unconditional counterpart."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Mapping

import torch
from torch import Tensor

#: Names of ``Conditioning.extras`` the first-party models read or write (a plugin may add its
#: own; name them ``plugin.name`` to stay clear of these).
#:
#: - ``text_embeds`` ``[B, D]``: SDXL's pooled text embedding (its second text encoder's projected
#:   end-of-text state), added to the time embedding by U-Nets with ``addition_embed_type = "text_time"``;
#: - ``time_ids`` ``[B, 6]``: SDXL's micro-conditioning, original size (h, w), crop top-left
#:   (top, left) and target size (h, w), in pixels;
#: - ``control_image.<i>`` ``[B, 3, H, W]`` in [0, 1]: the image of the ``i``-th ``[[controlnet]]``;
#: - ``down_block_residual.<i>`` / ``mid_block_residual``: residuals added to a U-Net's skip
#:   connections and middle block (a ControlNet's output; ``i`` counts the skips from ``conv_in``).
EXTRA_NAMES = ("text_embeds", "time_ids", "control_image.<i>", "down_block_residual.<i>", "mid_block_residual")


@dataclass
class Conditioning:
    """Everything a denoiser may be conditioned on, batch-first.

    :param tokens: token states for cross-attention, shape ``[B, L, D]``.
    :param pooled: pooled embeddings, shape ``[B, D]``.
    :param labels: class labels, shape ``[B]`` (long).
    :param mask: attention mask over ``tokens``, shape ``[B, L]`` (True = attend).
    :param extras: named further tensors, each batch-first ``[B, ...]``, for what the fixed fields
        do not cover: a model family's extra inputs (SDXL's ``text_embeds`` and ``time_ids``),
        a side network's inputs and outputs (a ControlNet's image and residuals). Every method
        here treats them as it treats the fields (``to``, ``repeat``, ``select``, ``cat``), so
        classifier-free guidance and chunking batch them with no code of their own. A denoiser
        documents the names it reads (``EXTRA_NAMES`` lists the first-party ones).
    :param negative: the unconditional / negative-prompt counterpart used by classifier-free
        guidance, with the same fields and batch size.
    """

    tokens: Tensor | None = None
    pooled: Tensor | None = None
    labels: Tensor | None = None
    mask: Tensor | None = None
    negative: Conditioning | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def _tensors(self) -> dict[str, Tensor]:
        """The fields that hold a tensor, without ``negative`` and ``extras``."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("negative", "extras") and getattr(self, f.name) is not None
        }

    def _map(self, function, negative: Conditioning | None) -> Conditioning:
        """A copy with ``function`` applied to every tensor, extras included."""
        return replace(
            self, **{name: function(value) for name, value in self._tensors().items()},
            extras={name: function(value) for name, value in self.extras.items()}, negative=negative,
        )

    @property
    def batch_size(self) -> int | None:
        tensors = {**self._tensors(), **self.extras}
        return next(iter(tensors.values())).shape[0] if tensors else None

    def with_extras(self, extras: Mapping[str, Tensor], negative: Mapping[str, Tensor] | None = None) -> Conditioning:
        """A copy with ``extras`` added (replacing those of the same name); the negative gets
        ``negative`` (default: the same tensors), so both halves of a guided batch carry them."""
        neg = self.negative
        if neg is not None:
            neg = replace(neg, extras={**neg.extras, **(extras if negative is None else negative)})
        return replace(self, extras={**self.extras, **extras}, negative=neg)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move to a device; floating tensors (not labels or masks) also change dtype."""
        negative = self.negative.to(device, dtype) if self.negative is not None else None
        return self._map(lambda v: v.to(device=device, dtype=dtype if v.is_floating_point() else None), negative)

    def repeat(self, n: int) -> Conditioning:
        """Repeat each sample ``n`` times along the batch (``[a, b] -> [a, a, b, b]``)."""
        negative = self.negative.repeat(n) if self.negative is not None else None
        return self._map(lambda v: v.repeat_interleave(n, dim=0), negative)

    def select(self, index: slice | Tensor) -> Conditioning:
        """Index the batch dimension of every tensor."""
        negative = self.negative.select(index) if self.negative is not None else None
        return self._map(lambda v: v[index], negative)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension; every part must set the same fields and extras.

        The ``negative`` of the result is dropped: concatenation is how guidance batches the
        conditional and unconditional passes into one forward.
        """
        names = [set(part._tensors()) for part in parts]
        if any(n != names[0] for n in names):
            raise ValueError(f"cannot concatenate conditionings with different fields: {names}")
        extras = [set(part.extras) for part in parts]
        if any(e != extras[0] for e in extras):
            raise ValueError(f"cannot concatenate conditionings with different extras: {[sorted(e) for e in extras]}")
        return Conditioning(
            **{name: torch.cat([getattr(p, name) for p in parts]) for name in names[0]},
            extras={name: torch.cat([p.extras[name] for p in parts]) for name in sorted(extras[0])},
        )
