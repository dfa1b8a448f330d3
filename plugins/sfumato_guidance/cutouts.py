"""Random square cutouts of images, resized to a CLIP encoder's input size.

Crowson's CLIP-guided diffusion (``MakeCutouts``): CLIP scores many random crops of the
predicted image rather than the whole of it, which makes its gradient less adversarial
(guidance towards features at every scale instead of a few pixels that fool one view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_cutouts(images: Tensor, count: int, size: int, power: float, generator: torch.Generator) -> Tensor:
    """``count`` cutouts of every image: ``[B, C, H, W] -> [count * B, C, size, size]``, cutout-major
    (rows ``k * B .. k * B + B - 1`` are cutout ``k`` of each image).

    Each cutout's side is ``min_side + r^power * (max_side - min_side)`` with ``r ~ U(0, 1)``,
    ``max_side = min(H, W)`` and ``min_side = min(max_side, size)``, at a uniform offset; all
    images share the cutout's geometry. The geometry is drawn from the CPU ``generator``, so it
    is reproducible on every device. Shrinking uses area averaging, enlarging is bilinear; both
    are differentiable.
    """
    height, width = images.shape[-2:]
    max_side = min(height, width)
    min_side = min(max_side, size)
    cuts = []
    for _ in range(count):
        r = float(torch.rand((), generator=generator))
        side = int(min_side + r**power * (max_side - min_side))
        top = int(torch.randint(0, height - side + 1, (), generator=generator))
        left = int(torch.randint(0, width - side + 1, (), generator=generator))
        cut = images[..., top : top + side, left : left + side]
        mode = "area" if side >= size else "bilinear"
        cuts.append(F.interpolate(cut, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False})))
    return torch.cat(cuts)  # (count * B, C, size, size)
