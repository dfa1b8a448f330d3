"""The encoder's output distribution: a Gaussian with diagonal covariance over the latents.

Kingma & Welling 2014 (https://arxiv.org/abs/1312.6114); the KL term against N(0, I) is the
regulariser of the Latent Diffusion autoencoder (https://arxiv.org/abs/2112.10752, sec. 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: ``logvar`` is clamped to this range, as in the released checkpoints, so ``exp`` cannot overflow.
LOGVAR_RANGE = (-30.0, 20.0)


class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` per latent element.

    :param moments: ``[B, 2 * C, h, w]``: the mean's channels, then the log-variance's.
    """

    def __init__(self, moments: Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, C, h, w) each
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample ``mean + std * eps`` (differentiable w.r.t. the moments).

        ``eps`` is drawn on the generator's device (CPU for a CPU generator) and then moved, so a
        seed gives the same latents on every device.
        """
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> Tensor:
        """The most likely latents: the mean."""
        return self.mean

    def kl(self, other: DiagonalGaussian | None = None) -> Tensor:
        """``KL(self || other)`` per example ``[B]``, summed over the latent elements;
        ``other`` defaults to the standard normal prior."""
        if other is None:
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            terms = (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar
        return 0.5 * terms.sum(dim=(1, 2, 3))

    def nll(self, sample: Tensor) -> Tensor:
        """Negative log-likelihood of ``sample`` per example ``[B]`` (in nats)."""
        terms = math.log(2.0 * math.pi) + self.logvar + (sample - self.mean).pow(2) / self.var
        return 0.5 * terms.sum(dim=(1, 2, 3))
