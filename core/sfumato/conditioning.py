"""``Conditioning``: what a denoiser is conditioned on, and its unconditional counterpart."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Conditioning:
    """Everything a denoiser may be conditioned on, batch-first.

    :param tokens: token states for cross-attention, shape ``[B, L, D]``.
    :param pooled: pooled embeddings, shape ``[B, D]``.
    :param labels: class labels, shape ``[B]`` (long).
    :param mask: attention mask over ``tokens``, shape ``[B, L]`` (True = attend).
    :param negative: the unconditional / negative-prompt counterpart used by classifier-free
        guidance, with the same fields and batch size.
    """

    tokens: Tensor | None = None
    pooled: Tensor | None = None
    labels: Tensor | None = None
    mask: Tensor | None = None
    negative: Conditioning | None = None

    def _tensors(self) -> dict[str, Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "negative" and getattr(self, f.name) is not None
        }

    @property
    def batch_size(self) -> int | None:
        tensors = self._tensors()
        return next(iter(tensors.values())).shape[0] if tensors else None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move to a device; floating tensors (not labels or masks) also change dtype."""
        moved = {
            name: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            for name, value in self._tensors().items()
        }
        negative = self.negative.to(device, dtype) if self.negative is not None else None
        return replace(self, **moved, negative=negative)

    def repeat(self, n: int) -> Conditioning:
        """Repeat each sample ``n`` times along the batch (``[a, b] -> [a, a, b, b]``)."""
        repeated = {name: value.repeat_interleave(n, dim=0) for name, value in self._tensors().items()}
        negative = self.negative.repeat(n) if self.negative is not None else None
        return replace(self, **repeated, negative=negative)

    def select(self, index: slice | Tensor) -> Conditioning:
        """Index the batch dimension of every tensor."""
        selected = {name: value[index] for name, value in self._tensors().items()}
        negative = self.negative.select(index) if self.negative is not None else None
        return replace(self, **selected, negative=negative)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension; every part must set the same fields.

        The ``negative`` of the result is dropped: concatenation is how guidance batches the
        conditional and unconditional passes into one forward.
        """
        names = [set(part._tensors()) for part in parts]
        if any(n != names[0] for n in names):
            raise ValueError(f"cannot concatenate conditionings with different fields: {names}")
        return Conditioning(**{name: torch.cat([getattr(p, name) for p in parts]) for name in names[0]})
