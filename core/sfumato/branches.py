"""Branches: more predictions of the same sample, computed in classifier-free guidance's one forward.

Classifier-free guidance runs one forward per model call on the batch ``[negative, positive]``.
Some methods need further predictions of the same ``x_t`` at every call: perp-neg the empty
prompt's, PAG and SEG the positive one under a model patch (``sfumato.model_patches``). Each is a
``Branch``; the guidance that owns the forward (``cfg``) runs them as more rows of the same batch,

    [negative, positive, branch 1, branch 2, ...]          (one forward)

and hands each branch its prediction. Who declares a branch:

- a combiner, for its own combination (``Combiner.branches``): ``cfg`` passes the predictions in
  ``CombineContext.branches``;
- a guidance method wrapped after ``cfg`` (``[[guidance]]`` listed later), with
  ``context.add_branch`` in its ``wrap``: at each call ``with_branch`` calls the predictor it
  wraps and returns the branch's prediction and the call's positive one from the same forward.
  Where no batching guidance lies below it, ``with_branch`` computes ``[positive, branch]`` in
  one forward of its own.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch import Tensor, nn

from .conditioning import Conditioning
from .model_patches import PointPatch, patched
from .prediction import Prediction

if TYPE_CHECKING:
    from .interfaces import Predictor


@dataclass(eq=False)
class Branch:
    """One more prediction of each model call's sample.

    :param conditioning: the branch's conditioning, made from the call's (positive) one, with its
        batch size; None: the positive conditioning itself.
    :param patches: model patches for the branch's rows: point name -> patch function
        (``sfumato.model_patches``), applied to ``model`` on this branch's rows only.
    :param model: the module whose points ``patches`` name (the pipeline's ``[denoiser]``).
    :param active: whether the coming calls compute it; the declaring method switches it (a step
        window: set it before calling the predictor it wraps).

    Filled at each call by the guidance that computes it:

    :param prediction: the branch's prediction.
    :param positive: the call's conditional (positive) prediction, from the same forward.
    :param x: the sample of the call they belong to (``with_branch`` checks it).
    """

    conditioning: Callable[[Conditioning], Conditioning] | None = None
    patches: Mapping[str, Callable[..., Tensor]] | None = None
    model: nn.Module | None = None
    active: bool = True
    prediction: Prediction | None = field(default=None, init=False)
    positive: Prediction | None = field(default=None, init=False)
    x: Tensor | None = field(default=None, init=False)

    def conditioning_for(self, cond: Conditioning) -> Conditioning:
        """The branch's conditioning for a call conditioned on ``cond`` (without its negative)."""
        if self.conditioning is None:
            return Conditioning.cat([cond])
        return self.conditioning(cond)


def evaluate(predictor: Predictor, x: Tensor, t: Tensor, cond: Conditioning, branches: list[Branch],
             negative: bool = True) -> tuple[Prediction | None, Prediction]:
    """Run ``predictor`` once on ``[negative, positive, *branches]`` (without the negative when
    ``negative`` is False) and return ``(unconditional, positive)``; each branch receives its
    prediction (and the positive one) for this call. With no branches this is exactly classifier-
    free guidance's forward on ``[negative, positive]``."""
    parts = ([cond.negative] if negative else []) + [cond] + [branch.conditioning_for(cond) for branch in branches]
    if len(parts) == 1:
        positive, uncond = predictor(x, t, cond), None
    else:
        batch = len(parts)
        with ExitStack() as stack:
            for model, patches in row_patches(branches, len(parts) - len(branches), x.shape[0]).items():
                stack.enter_context(patched(model, patches))
            out = predictor(torch.cat([x] * batch), torch.cat([t] * batch), Conditioning.cat(parts))
        chunks = out.chunk(batch)
        uncond, chunks = (chunks[0], chunks[1:]) if negative else (None, chunks)
        positive = chunks[0]
        for branch, prediction in zip(branches, chunks[1:]):
            branch.prediction, branch.positive, branch.x = prediction, positive, x
    return uncond, positive


def row_patches(branches: list[Branch], first: int, size: int) -> dict[nn.Module, dict[str, list[PointPatch]]]:
    """The branches' patches on their rows of the batch, per model: branch ``i`` holds rows
    ``(first + i) * size`` to ``(first + i + 1) * size``."""
    by_model: dict[nn.Module, dict[str, list[PointPatch]]] = {}
    for i, branch in enumerate(branches):
        if not branch.patches:
            continue
        if branch.model is None:
            raise ValueError("a branch with model patches needs the model they apply to (Branch.model)")
        rows = slice((first + i) * size, (first + i + 1) * size)
        points = by_model.setdefault(branch.model, {})
        for name, function in branch.patches.items():
            points.setdefault(name, []).append(PointPatch(function, rows))
    return by_model


def with_branch(branch: Branch, declared: bool, predictor: Predictor, x: Tensor, t: Tensor,
                cond: Conditioning) -> tuple[Prediction, Prediction, Prediction]:
    """``(out, positive, branch prediction)`` of one call, for a guidance method wrapped after the
    one that computes its branch: ``out`` is what the wrapped ``predictor`` returns for the call.

    :param declared: what ``context.add_branch`` returned. True: the batching guidance below
        computes the branch in its forward, and ``positive`` is the call's conditional prediction
        from it. False (none below): one forward of ``predictor`` on ``[positive, branch]``, whose
        positive rows are ``out``. Where the batching guidance saw another sample (a method between
        the two calls the model on a sample of its own: CLIP guidance through the model), the
        branch is the whole wrapped predictor under the branch's patches and conditioning, and
        ``positive`` is ``out``: the method then guides the guided prediction, at one more call.
    """
    if not declared:
        _, positive = evaluate(predictor, x, t, cond, [branch], negative=False)
        return positive, positive, branch.prediction
    out = predictor(x, t, cond)
    if branch.x is x:
        return out, branch.positive, branch.prediction
    own = replace(branch.conditioning_for(cond), negative=cond.negative)
    with ExitStack() as stack:
        if branch.patches:
            stack.enter_context(patched(branch.model, {name: [PointPatch(f)] for name, f in branch.patches.items()}))
        return out, out, predictor(x, t, own)
