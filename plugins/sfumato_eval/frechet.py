"""The Frechet distance between two sets of features, each summarised as a Gaussian: FID's
formula (Heusel et al. 2017, https://arxiv.org/abs/1706.08500) on any feature extractor.

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

``tr((S_1 S_2)^(1/2))`` is computed without a general matrix square root: ``S_1 S_2`` is similar
to the symmetric PSD matrix ``S_1^(1/2) S_2 S_1^(1/2)``, so the trace is the sum of the square
roots of that matrix's eigenvalues, two ``eigh`` calls in float64 (no scipy needed).
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean [D], covariance [D, D])`` of ``features [N, D]``, in float64 (unbiased covariance)."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature vectors [N, D], got shape {tuple(features.shape)}")
    x = features.detach().double().cpu()
    return x.mean(dim=0), torch.cov(x.T)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """The square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mean_1: Tensor, cov_1: Tensor, mean_2: Tensor, cov_2: Tensor) -> float:
    """The squared Frechet distance between N(mean_1, cov_1) and N(mean_2, cov_2), as FID reports it
    (round-off can take it a hair below zero for identical sets; it is clipped at 0)."""
    root_1 = _psd_sqrt(cov_1.double())
    middle = root_1 @ cov_2.double() @ root_1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    difference = (mean_1.double() - mean_2.double()).square().sum()
    return max(0.0, float(difference + cov_1.double().trace() + cov_2.double().trace() - 2 * trace_sqrt))


def feature_frechet_distance(features_1: Tensor, features_2: Tensor) -> float:
    """The Frechet distance between two feature sets ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*gaussian_statistics(features_1), *gaussian_statistics(features_2))
