"""A chain of ``block`` points run one after the other (a transformer's blocks), for the caches
that skip all of them but one: the first-block cache and TaylorSeer.

The chain checks, at run time and without reading tensor values, that each selected block's
input is the previous one's output (same storage and shape): a U-Net's transformer blocks are
separated by convolutions, and a cache that skipped them as a chain would compute nonsense.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

import sfumato

from .calls import points_of

#: The ``layers`` field of the chain caches: which block points form the chain.
LayersField = Field(None, description="Regular expressions selecting the chain of transformer blocks by module name "
                    "(\"transformer_blocks\"); default: every block point of the [denoiser], which must run one after "
                    "the other.")


class BlockChain:
    """The selected block points in model order, and where the current forward is along them."""

    def __init__(self, denoiser: sfumato.Denoiser, layers: list[str] | None, name: str):
        self.points = points_of(denoiser, layers, sfumato.model_patches.BLOCK, name)
        self.name, self.denoiser = name, denoiser
        self.position, self.previous = 0, None

    def start(self, x: Tensor) -> None:
        """The first block of a forward begins."""
        self.position, self.previous = 0, None

    def check(self, x: Tensor) -> None:
        """A later block begins: its input must be the previous block's output."""
        self.position += 1
        previous = self.previous
        if previous is None or x.data_ptr() != previous.data_ptr() or x.shape != previous.shape:
            raise sfumato.SpecError(
                f"[[speedups]] {self.name} skips a chain of blocks that run one after the other, but in this "
                f"{self.denoiser.type_name()!r} denoiser {self.points[self.position]} does not take the output of "
                f"{self.points[self.position - 1]} (other layers run between them); select consecutive transformer "
                "blocks with layers, or use deepcache for a U-Net")

    def track(self, out: Tensor) -> Tensor:
        """Note a block's output (the next block's input) and return it."""
        self.previous = out
        return out

    def is_last(self) -> bool:
        return self.position == len(self.points) - 1
