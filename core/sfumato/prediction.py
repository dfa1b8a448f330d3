"""``Prediction``: what a predictor returns for ``(x_t, t)``, in every parameterisation at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Prediction:
    """A denoiser's prediction at ``(x_t, t)`` expressed as both ``x0`` and ``eps``.

    With ``x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps`` (variance preserving), one of
    the two determines the other; the ``NoiseSchedule`` derives both from whatever the network
    predicts (epsilon, v or the sample), so schedulers and guidance never branch on the model's
    parameterisation.

    :param x0: predicted clean sample, same shape as ``x_t``.
    :param eps: predicted noise, same shape as ``x_t``.
    :param alpha_bar: ``alpha_bar(t)``, broadcastable to ``x_t`` (shape ``[B, 1, 1, 1]``).
    """

    x0: Tensor
    eps: Tensor
    alpha_bar: Tensor

    @classmethod
    def from_x0(cls, x0: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Prediction:
        """The prediction whose clean sample is ``x0`` at ``x_t``: ``eps = (x_t - sqrt(a) x0) / sqrt(1 - a)``.

        What a guidance method that edits x0 (clamping, APG's projection) returns.
        """
        return cls(x0=x0, eps=(x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt(), alpha_bar=alpha_bar)

    @classmethod
    def from_eps(cls, eps: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Prediction:
        """The prediction whose noise is ``eps`` at ``x_t``: ``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``."""
        return cls(x0=(x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt(), eps=eps, alpha_bar=alpha_bar)

    @property
    def v(self) -> Tensor:
        """The v-prediction ``sqrt(a) * eps - sqrt(1 - a) * x0`` (Salimans & Ho, 2022)."""
        return self.alpha_bar.sqrt() * self.eps - (1 - self.alpha_bar).sqrt() * self.x0

    def lerp(self, other: Prediction, weight: float | Tensor) -> Prediction:
        """``self + weight * (other - self)`` on both x0 and eps.

        Every parameterisation is affine in the network output with the same coefficients, so
        this equals guiding the raw outputs (classifier-free guidance is ``uncond.lerp(cond, s)``).
        """
        return Prediction(
            x0=torch.lerp(self.x0, other.x0, weight) if isinstance(weight, Tensor)
            else self.x0 + weight * (other.x0 - self.x0),
            eps=torch.lerp(self.eps, other.eps, weight) if isinstance(weight, Tensor)
            else self.eps + weight * (other.eps - self.eps),
            alpha_bar=self.alpha_bar,
        )

    def chunk(self, chunks: int) -> list[Prediction]:
        """Split along the batch dimension (the inverse of running a concatenated batch)."""
        alpha_bars = (
            self.alpha_bar.chunk(chunks) if self.alpha_bar.shape[0] == self.x0.shape[0]
            else [self.alpha_bar] * chunks
        )
        return [
            Prediction(x0=x0, eps=eps, alpha_bar=a)
            for x0, eps, a in zip(self.x0.chunk(chunks), self.eps.chunk(chunks), alpha_bars)
        ]
