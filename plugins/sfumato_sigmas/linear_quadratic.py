"""The linear-quadratic schedule of Genmo's Mochi 1 (https://github.com/genmoai/models,
``mochi_preview/infer.py``; ComfyUI's ``linear_quadratic_schedule``), made for flow-matching models
whose largest sigma is 1.

In fractions of ``sigma_max``: the first ``linear_steps`` levels fall linearly from 1 to
``1 - threshold_noise``, the rest follow the quadratic that continues that line and reaches 0 at
step ``N``:

    sigma_i / sigma_max = 1 - i * threshold_noise / linear_steps             for i < linear_steps
                        = 1 - (q i^2 + l i + c)                              for i >= linear_steps

with ``q``, ``l`` and ``c`` fixed by continuity at ``linear_steps`` and by reaching 0 at ``N``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato


class LinearQuadratic(sfumato.SigmaSchedule):
    """A slow linear start, then a quadratic descent to 0."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["linear-quadratic"] = "linear-quadratic"
        threshold_noise: float = Field(
            0.025, gt=0, lt=1, description="The fraction of sigma_max the linear part removes."
        )
        linear_steps: int | None = Field(
            None, ge=1, description="Steps of the linear part (fewer than the steps); none: half the steps."
        )

    def sigmas(self, formulation, steps):
        if steps == 1:
            return torch.tensor([formulation.sigma_max], dtype=torch.float32)
        linear_steps = self.spec.linear_steps or steps // 2
        if linear_steps >= steps:
            raise self.spec_error(
                f"linear_steps = {linear_steps} leaves no quadratic part for {steps} steps; use fewer than {steps}"
            )
        threshold = self.spec.threshold_noise
        quadratic_steps = steps - linear_steps
        overshoot = linear_steps - threshold * steps
        quadratic = overshoot / (linear_steps * quadratic_steps**2)
        linear = threshold / linear_steps - 2 * overshoot / quadratic_steps**2
        constant = quadratic * linear_steps**2
        i = np.arange(steps, dtype=np.float64)
        removed = np.where(i < linear_steps, i * threshold / linear_steps, quadratic * i**2 + linear * i + constant)
        return torch.from_numpy((1 - removed) * formulation.sigma_max).to(torch.float32)
