"""Beta schedules (Lee et al. 2024, "Beta Sampling is All You Need", https://arxiv.org/abs/2407.12173):
the levels sit at the quantiles ``ppf(1 - i / (N - 1))`` of a beta distribution, which with
``alpha = beta = 0.6`` crowds the steps at both ends of the trajectory.

Two readings exist, and ``domain`` selects one:

- ``sigma`` (the default; diffusers' ``use_beta_sigmas``): the quantiles map linearly onto the
  model's sigma range, ``sigma_i = sigma_min + ppf(1 - i / (N - 1)) (sigma_max - sigma_min)``.
- ``timestep`` (ComfyUI's ``beta_scheduler``): the quantiles ``ppf(1 - i / N)`` map onto the
  training timesteps, rounded to integers, and each level is the model's level there. Where two
  steps round to the same timestep ComfyUI drops the repeat and runs fewer steps; here that is an
  error that says how many distinct timesteps there are.

The beta distribution's inverse CDF is computed here (``beta_ppf``), so sfumato needs no SciPy.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

import sfumato


class Beta(sfumato.SigmaSchedule):
    """Levels at the quantiles of a beta distribution, over sigma or over the training timesteps."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["beta"] = "beta"
        alpha: float = Field(
            0.6, gt=0, description="First shape parameter of the beta distribution: below 1 crowds steps at low noise."
        )
        beta: float = Field(
            0.6, gt=0, description="Second shape parameter of the beta distribution: below 1 crowds steps at high noise."
        )
        domain: Literal["sigma", "timestep"] = Field(
            "sigma",
            description="Where the quantiles are placed: sigma (linearly over the sigma range, as diffusers' "
            "use_beta_sigmas) or timestep (on the integer training timesteps, as ComfyUI's beta scheduler).",
        )

    def sigmas(self, formulation, steps):
        alpha, beta = self.spec.alpha, self.spec.beta
        if self.spec.domain == "sigma":
            quantiles = beta_ppf(1 - np.linspace(0, 1, steps), alpha, beta)
            levels = formulation.sigma_min + quantiles * (formulation.sigma_max - formulation.sigma_min)
            return torch.from_numpy(levels).to(torch.float32)
        table = formulation.sigmas  # (T,) ascending
        quantiles = beta_ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta)
        index = np.rint(quantiles * (len(table) - 1)).astype(np.int64)
        distinct = len(np.unique(index))
        if distinct < steps:
            raise self.spec_error(
                f"with domain = 'timestep', {steps} steps round to only {distinct} distinct training "
                f"timesteps; use at most {distinct} steps, or domain = 'sigma'"
            )
        return table[torch.from_numpy(index)].to(torch.float32)


def beta_ppf(q: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The beta distribution's inverse CDF at the probabilities ``q`` (float64; as SciPy's
    ``scipy.stats.beta.ppf`` to about 1e-14).

    Solves ``I_x(alpha, beta) = q`` by Newton's method on the regularised incomplete beta function,
    with bisection whenever a Newton step would leave the bracket that holds the root. Above
    ``q = 1/2`` it solves the mirrored problem ``I_(1-x)(beta, alpha) = 1 - q`` instead, whose
    right-hand side is exact, so quantiles near 1 keep their digits. ``q = 0`` and ``q = 1`` give
    0 and 1.
    """
    q = np.asarray(q, dtype=np.float64)
    upper = q > 0.5
    log_beta = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)  # B(a, b) = B(b, a)
    a, b = np.where(upper, beta, alpha), np.where(upper, alpha, beta)
    x = _lower_quantile(np.where(upper, 1 - q, q), a, b, log_beta)
    return np.where(upper, 1 - x, x)


def _lower_quantile(q: np.ndarray, a: np.ndarray, b: np.ndarray, log_beta: float) -> np.ndarray:
    """``x`` with ``I_x(a, b) = q`` for ``0 <= q <= 1/2`` (``a``, ``b`` elementwise)."""
    inside = q > 0
    target = np.where(inside, q, 0.25)  # q = 0 is exact; solve a harmless stand-in there
    resolution = 4 * np.finfo(np.float64).eps
    # Start from the lower tail's leading term, I_x(a, b) ~ x^a / (a B(a, b)), kept inside (0, 1).
    start = np.exp((np.log(target) + np.log(a) + log_beta) / a)
    low, high, x = np.zeros_like(q), np.ones_like(q), np.clip(start, 1e-300, 0.5)
    for _ in range(200):
        error = regularized_incomplete_beta(x, a, b, log_beta) - target
        low, high = np.where(error < 0, x, low), np.where(error > 0, x, high)
        density = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta)
        with np.errstate(divide="ignore", invalid="ignore"):  # a density that underflows: bisect
            newton = x - error / density
        done = (error == 0) | (np.abs(newton - x) <= resolution * x) | (high - low <= resolution * x)
        if done.all():
            break
        x = np.where(done, x, np.where((newton > low) & (newton < high), newton, (low + high) / 2))
    return np.where(inside, x, 0.0)


def regularized_incomplete_beta(x: np.ndarray, alpha: np.ndarray, beta: np.ndarray, log_beta: float) -> np.ndarray:
    """``I_x(alpha, beta)`` for ``0 < x < 1`` from its continued fraction (Numerical Recipes, 3rd
    ed., Sec. 6.4), evaluated where it converges fast: directly for ``x < (alpha + 1) /
    (alpha + beta + 2)``, else as ``1 - I_(1-x)(beta, alpha)``. ``log_beta`` is ``log B(alpha, beta)``;
    all elementwise."""
    flip = x >= (alpha + 1) / (alpha + beta + 2)
    a, b = np.where(flip, beta, alpha), np.where(flip, alpha, beta)
    y = np.where(flip, 1 - x, x)
    front = np.exp(a * np.log(y) + b * np.log1p(-y) - log_beta) / a
    value = front * _beta_continued_fraction(y, a, b)
    return np.where(flip, 1 - value, value)


def _beta_continued_fraction(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The continued fraction of ``I_x(a, b)`` by the modified Lentz method (float64)."""
    tiny, eps = 1e-300, np.finfo(np.float64).eps

    def nonzero(value: np.ndarray) -> np.ndarray:
        return np.where(np.abs(value) < tiny, tiny, value)

    c = np.ones_like(x)
    d = 1 / nonzero(1 - (a + b) * x / (a + 1))
    fraction = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd step
        ):
            d = 1 / nonzero(1 + numerator * d)
            c = nonzero(1 + numerator / c)
            fraction = fraction * d * c
        if np.all(np.abs(d * c - 1) <= eps):
            break
    return fraction
