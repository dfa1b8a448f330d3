"""Align Your Steps (Sabour et al. 2024, https://arxiv.org/abs/2404.14507): noise levels optimised
per model, published for 10 steps (NVIDIA's how-to page,
https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html; the digits are ComfyUI's,
``comfy_extras/nodes_align_your_steps.py``), and interpolated log-linearly for other step counts as
the authors recommend (ComfyUI's ``loglinear_interp``).

The tables are for Stable Diffusion 1.5 and SDXL, whose sigma range is 0.0292 to 14.61: they do not
adapt to another model's range. Use them with those models or models trained on their noise
schedule (``scaled_linear``, 0.00085 to 0.012, 1000 timesteps).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato

#: The 10-step noise levels (11 with the final one, sigma_min) of each model, decreasing.
NOISE_LEVELS = {
    "sd15": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
             0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "sdxl": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
}


class AlignYourSteps(sfumato.SigmaSchedule):
    """The published levels of a model, interpolated to any number of steps."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["align-your-steps"] = "align-your-steps"
        model: Literal["sd15", "sdxl"] = Field(
            "sd15", description="Whose optimised levels: sd15 (Stable Diffusion 1.5) or sdxl."
        )

    def sigmas(self, formulation, steps):
        levels = loglinear_interp(np.array(NOISE_LEVELS[self.spec.model]), steps + 1)
        return torch.from_numpy(levels[:-1]).to(torch.float32)  # the last level becomes the final 0


def loglinear_interp(levels: np.ndarray, count: int) -> np.ndarray:
    """``count`` values through decreasing ``levels``, linear in log-level against an even grid
    over ``[0, 1]`` (float64; ``levels`` itself when the counts agree)."""
    if count == len(levels):
        return levels
    log_levels = np.interp(np.linspace(0, 1, count), np.linspace(0, 1, len(levels)), np.log(levels[::-1]))
    return np.exp(log_levels)[::-1].copy()
