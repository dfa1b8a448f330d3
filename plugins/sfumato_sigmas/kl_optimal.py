"""The KL-optimal schedule of Sabour et al. 2024, "Align Your Steps"
(https://arxiv.org/abs/2404.14507), even in ``arctan(sigma)``:

    sigma_i = tan((1 - i / (N - 1)) arctan(sigma_max) + i / (N - 1) arctan(sigma_min))

The paper derives it as the schedule that minimises its KL bound for Gaussian data. ComfyUI's
``kl_optimal_scheduler`` (from the WebUI's pull request 15608); with one step it gives
``sigma_max`` where ComfyUI divides by zero.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

import sfumato


class KLOptimal(sfumato.SigmaSchedule):
    """Levels evenly spaced in ``arctan(sigma)`` over the model's whole sigma range."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["kl-optimal"] = "kl-optimal"

    def sigmas(self, formulation, steps):
        ramp = np.arange(steps) / max(steps - 1, 1)
        angles = ramp * math.atan(formulation.sigma_min) + (1 - ramp) * math.atan(formulation.sigma_max)
        return torch.from_numpy(np.tan(angles)).to(torch.float32)
