"""``classifier``: classifier guidance with a noise-aware classifier.

Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis"
(https://arxiv.org/abs/2105.05233), Algorithm 2 / eq. 14:

    eps' = eps - scale * sqrt(1 - alpha_bar) * grad_x log p_phi(y | x_t)

with ``p_phi`` the pipeline's ``[classifier]`` (a ``sfumato.Classifier``, ``(x_t, t) -> logits``,
on the same space as the denoiser: pixels or latents) and x0 recomputed from ``eps'`` at the
same ``x_t``. The gradient is taken w.r.t. ``x_t`` only (the classifier sees ``x_t``, not the
denoiser's x0), under ``torch.enable_grad()`` since generation runs under ``no_grad``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import sfumato

from .score import shift_score, tile_to_batch


class ClassifierGuidance(sfumato.Guidance):
    """Follows ``grad_x log p(y | x_t)`` of the pipeline's noise-aware classifier."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["classifier"] = "classifier"
        scale: float = Field(
            1.0, description="Classifier scale s multiplying grad log p(y | x_t); 0 is exactly unguided "
            "(Dhariwal & Nichol use 1 to 10).",
        )
        label: int | None = Field(
            None, ge=0, description="Target class for every sample; None: the run's labels (generate(labels=...)).",
        )

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec = self.spec
        if spec.scale == 0.0:
            return predictor
        classifier = context.components.get("classifier")
        if classifier is None:
            raise ValueError("classifier guidance needs a [classifier] table (a noise-aware classifier, "
                             "e.g. type = \"noise-classifier\")")
        if spec.label is None and context.labels is None:
            raise ValueError("classifier guidance needs target labels: pass labels to generate() or set "
                             "`label` in its [[guidance]] table")
        if spec.label is not None and spec.label >= classifier.num_classes:
            raise ValueError(f"classifier guidance label {spec.label} is out of range for a classifier "
                             f"with {classifier.num_classes} classes")

        def guided(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            prediction = predictor(x, t, cond)
            grad = log_prob_gradient(classifier, x, t, self._targets(context, x))
            return shift_score(prediction, grad, spec.scale)

        return guided

    def _targets(self, context: sfumato.GuidanceContext, x: Tensor) -> Tensor:
        if self.spec.label is not None:
            return torch.full((x.shape[0],), self.spec.label, dtype=torch.long, device=x.device)
        return tile_to_batch(context.labels.to(x.device).long(), x.shape[0], "classifier guidance labels")


def log_prob_gradient(classifier: sfumato.Classifier, x: Tensor, t: Tensor, targets: Tensor) -> Tensor:
    """``grad_x log softmax(classifier(x, t))[y]`` per sample (summed over the batch, whose
    samples are independent, so each row is that sample's own gradient)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_probs = classifier(x_in, t).float().log_softmax(dim=-1)  # (B, classes)
        selected = log_probs.gather(1, targets.reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, x_in)
    return grad
