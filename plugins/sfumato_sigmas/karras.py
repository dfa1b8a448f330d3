"""Karras et al. 2022 (https://arxiv.org/abs/2206.00364), Eq. 5:

    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

k-diffusion's ``get_sigmas_karras``, diffusers' ``use_karras_sigmas``, the WebUI's "Karras".
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato


class Karras(sfumato.SigmaSchedule):
    """Levels even in ``sigma^(1/rho)`` over the model's whole sigma range."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["karras"] = "karras"
        rho: float = Field(
            7.0, gt=0, description="Karras et al. 2022, Eq. 5: larger rho spends more steps at low noise; 7 in the paper."
        )

    def sigmas(self, formulation, steps):
        levels = sfumato.spacing.karras_sigmas(formulation.sigma_min, formulation.sigma_max, steps, self.spec.rho)
        return torch.from_numpy(levels).to(torch.float32)
