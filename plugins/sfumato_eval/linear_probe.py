"""Linear probes on frozen CLIP image features: multinomial logistic regression, the probe of the
CLIP paper (section 3.2; Radford et al. 2021) and CLIP_benchmark, fitted full-batch with L-BFGS.

The objective is scikit-learn's ``LogisticRegression`` (``lbfgs``, multinomial) divided by the
number of images: ``mean cross-entropy + weight_decay / 2 * |W|^2`` (the bias unpenalised), so
``weight_decay = 1 / (C * N)`` for its ``C``; ``tests/eval/test_clip_benchmark.py`` checks the
fitted weights against scikit-learn's. It runs in float64 on the CPU, with no other dependency.

- ``linear_probe``: the weight decay is chosen on a seeded fifth of the training images from
  ``WEIGHT_DECAYS`` (most accurate; the strongest on a tie), then the probe is refitted on all.
- ``few_shot_probe``: ``k`` images per class drawn with a seed; too few images to choose the weight
  decay on, so it is ``FEW_SHOT_WEIGHT_DECAY``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: The weight decays ``linear_probe`` chooses from (scikit-learn's ``C = 1 / (weight_decay * N)``).
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: The weight decay of the few-shot probes.
FEW_SHOT_WEIGHT_DECAY = 1e-2
#: The share of the training images ``linear_probe`` holds out to choose the weight decay.
VALIDATION_SHARE = 0.2


@dataclass
class LinearProbe:
    """``logits = features @ weight.T + bias`` over ``classes`` (names, in column order)."""

    weight: Tensor  # (C, E)
    bias: Tensor  # (C,)
    classes: list[str]
    weight_decay: float

    def logits(self, features: Tensor) -> Tensor:
        return features.double() @ self.weight.T + self.bias  # (N, C)

    def accuracy(self, features: Tensor, names: list[str]) -> float:
        """Top-1 accuracy on ``features [N, E]`` whose true classes are ``names``."""
        index = {name: i for i, name in enumerate(self.classes)}
        targets = torch.tensor([index.get(name, -1) for name in names])  # -1: a class the probe never saw
        return (self.logits(features).argmax(dim=1) == targets).double().mean().item()


def fit_logistic_regression(features: Tensor, targets: Tensor, classes: int, weight_decay: float,
                            max_iter: int = 1000) -> tuple[Tensor, Tensor]:
    """``(weight [C, E], bias [C])`` minimising ``mean CE + weight_decay / 2 * |W|^2`` on
    ``features [N, E]`` with class indices ``targets [N]``; float64, full-batch L-BFGS from zero."""
    x = features.detach().double().cpu()
    y = targets.long().cpu()
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weight.detach(), bias.detach()


def fit_probe(features: Tensor, names: list[str], weight_decay: float) -> LinearProbe:
    """A ``LinearProbe`` over the sorted distinct ``names`` fitted on ``features [N, E]``."""
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    weight, bias = fit_logistic_regression(features, torch.tensor([index[n] for n in names]), len(classes),
                                           weight_decay)
    return LinearProbe(weight, bias, classes, weight_decay)


def linear_probe(train_features: Tensor, train_names: list[str], seed: int = 0,
                 weight_decays: tuple[float, ...] = WEIGHT_DECAYS) -> LinearProbe:
    """The probe on all training images, its weight decay the one of ``weight_decays`` most
    accurate on a seeded ``VALIDATION_SHARE`` of them when fitted on the rest (the strongest on a
    tie; the smallest when there are too few images to hold any out)."""
    count = len(train_names)
    held = int(count * VALIDATION_SHARE)
    if held < 1 or len(set(train_names)) < 2:
        return fit_probe(train_features, train_names, min(weight_decays))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    val, fit = order[:held], order[held:]
    fit_names = [train_names[i] for i in fit]
    if len(set(fit_names)) < 2:
        return fit_probe(train_features, train_names, min(weight_decays))
    val_names = [train_names[i] for i in val]
    scores = {decay: fit_probe(train_features[fit], fit_names, decay).accuracy(train_features[val], val_names)
              for decay in weight_decays}
    best = max(scores.values())
    return fit_probe(train_features, train_names, max(d for d, s in scores.items() if s == best))


def few_shot_rows(names: list[str], shots: int, seed: int = 0) -> list[int]:
    """``shots`` rows of each class of ``names`` (all of a class that has fewer), drawn with ``seed``."""
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    taken: dict[str, int] = {}
    rows = []
    for row in order:
        if taken.get(names[row], 0) < shots:
            taken[names[row]] = taken.get(names[row], 0) + 1
            rows.append(row)
    return sorted(rows)


def few_shot_probe(train_features: Tensor, train_names: list[str], shots: int, seed: int = 0,
                   weight_decay: float = FEW_SHOT_WEIGHT_DECAY) -> LinearProbe:
    """The probe on ``shots`` training images per class (``few_shot_rows``)."""
    rows = few_shot_rows(train_names, shots, seed)
    return fit_probe(train_features[rows], [train_names[i] for i in rows], weight_decay)
