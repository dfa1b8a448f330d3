"""Adaptive projected guidance (APG).

Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance Scales in
Diffusion Models", https://arxiv.org/abs/2410.02416. Classifier-free guidance's update
``D = x0_cond - x0_uncond`` is split into a part parallel to ``x0_cond`` (which mostly
oversaturates) and an orthogonal part (which mostly improves quality); APG keeps the orthogonal
part, down-weights the parallel one by ``eta`` and caps the update's norm:

    D <- D * min(1, r / ||D||)
    D_par = (<D, x0_cond> / ||x0_cond||^2) x0_cond,   D_orth = D - D_par
    x0 = x0_cond + (scale - 1) * (D_orth + eta * D_par)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato


class AdaptiveProjectedGuidance(sfumato.Guidance):
    class Spec(sfumato.ComponentSpec):
        type: Literal["example.apg"] = "example.apg"
        scale: float = Field(7.5, description="Guidance scale; 1 is unguided (as for CFG).")
        eta: float = Field(0.0, ge=0, description="Weight of the update parallel to the conditional x0.")
        norm_threshold: float = Field(15.0, ge=0, description="Cap on the update's L2 norm per sample; 0 disables.")

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec = self.spec

        def guided(x, t, cond):
            if spec.scale == 1.0 or cond.negative is None:
                return predictor(x, t, cond)
            both = predictor(torch.cat([x, x]), torch.cat([t, t]), sfumato.Conditioning.cat([cond.negative, cond]))
            uncond, positive = both.chunk(2)
            dims = tuple(range(1, x.ndim))
            diff = positive.x0 - uncond.x0
            if spec.norm_threshold > 0:
                norm = diff.norm(p=2, dim=dims, keepdim=True)
                diff = diff * torch.clamp(spec.norm_threshold / norm.clamp_min(1e-12), max=1.0)
            unit = positive.x0 / positive.x0.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12)
            parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
            update = (diff - parallel) + spec.eta * parallel
            return sfumato.Prediction.from_x0(positive.x0 + (spec.scale - 1) * update, x, positive.alpha_bar)

        return guided
