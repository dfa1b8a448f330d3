"""Gradient guidance as a shift of the score: the one formula classifier and CLIP guidance share.

A predicted noise is a scaled score, ``eps(x_t) = -sqrt(1 - a) * grad_x log p(x_t)``, so adding
``log p(y | x_t)`` to the log-density (Bayes: ``p(x_t | y) ~ p(x_t) p(y | x_t)``) gives

    eps' = eps - scale * sqrt(1 - a) * grad_x log p(y | x_t)

(Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", eq. 14 and
Algorithm 2; Song et al. 2021 for the score view). Because every sampler reads the prediction
rather than the score, the same shift works with DDPM, DDIM and the sigma-space samplers.
"""

from __future__ import annotations

from torch import Tensor

import sfumato


def shift_score(prediction: sfumato.Prediction, grad_log_p: Tensor, scale: float) -> sfumato.Prediction:
    """``eps' = eps - scale * sqrt(1 - a) * grad_log_p`` and the x0 consistent with it at the same
    ``x_t``: ``x0' = x0 - sqrt((1 - a) / a) * (eps' - eps)`` (so a zero gradient changes nothing).

    :param prediction: the unguided prediction at ``(x_t, t)``.
    :param grad_log_p: ``grad_x log p(y | x_t)``, shaped like ``x_t``.
    """
    a = prediction.alpha_bar
    delta_eps = -scale * (1 - a).sqrt() * grad_log_p.to(prediction.eps.dtype)
    x0 = prediction.x0 - ((1 - a) / a).sqrt() * delta_eps
    return sfumato.Prediction(x0=x0, eps=prediction.eps + delta_eps, alpha_bar=a)


def tile_to_batch(values: Tensor, batch: int, what: str) -> Tensor:
    """Repeat per-sample ``values`` ``[n, ...]`` whole (``[v, v]``, not ``[v0, v0, v1, v1]``) to
    ``batch`` rows: an outer classifier-free guidance concatenates ``[negative, positive]``, so an
    inner gradient guidance sees the run's batch twice, in that order."""
    n = values.shape[0]
    if batch % n:
        raise ValueError(f"{what}: {n} value(s) cannot be matched to a batch of {batch}")
    return values.repeat(batch // n, *([1] * (values.ndim - 1)))
