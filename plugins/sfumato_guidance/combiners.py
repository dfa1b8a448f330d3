"""The first-party combiners of classifier-free guidance (``[[guidance]] type = "cfg"``, field
``combiner``): ``cfg``, ``apg``, ``cfg-zero-star``, ``tcfg`` and ``perp-neg``.

Each combines the conditional and unconditional predictions of one model call (``sfumato.Combiner``);
the ``cfg`` guidance runs the batched forward and applies rescale and the interval around it. The
nonlinear ones work on the network's raw output (``context.output``: eps, v, the flow velocity,
EDM's F), the space diffusers' guiders (``diffusers.guiders``) combine in, and equal them there.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import sfumato


def sample_dims(tensor: Tensor) -> list[int]:
    """Every dimension but the batch: norms and inner products are per sample."""
    return list(range(1, tensor.ndim))


class CFGCombiner(sfumato.Combiner):
    """``uncond + scale * (cond - uncond)`` (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598) on
    x0 and eps together, which equals combining the raw outputs (each is affine in the output)."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["cfg"] = "cfg"

    def combine(self, cond, uncond, scale, context):
        return uncond.lerp(cond, scale)


class APGCombiner(sfumato.Combiner):
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of
    High Guidance Scales in Diffusion Models", https://arxiv.org/abs/2410.02416), as diffusers'
    ``AdaptiveProjectedGuidance``, on the raw outputs ``c`` (conditional) and ``u``::

        D   = c - u;   with momentum: A = D + momentum * A (A = 0 at each run's start), D = A
        D   = D * min(1, norm_threshold / ||D||)                      (norm_threshold > 0)
        D   = D_orth + eta * D_par,  D_par = <D, c_hat> c_hat,  c_hat = c / ||c||   (float64)
        out = u + scale * D

    Norms and inner products are per sample over every other dimension. The momentum buffer is
    this run's (``context.state``), updated at every guided model call.
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["apg"] = "apg"
        eta: float = Field(0.0, description="Weight of the update's part parallel to the conditional output "
                           "(the part that oversaturates): 0 drops it (the paper's choice), 1 keeps it (plain CFG).")
        norm_threshold: float = Field(15.0, ge=0.0, description="Cap r on the update's L2 norm per sample "
                                      "(diffusers' adaptive_projected_guidance_rescale); 0 disables.")
        momentum: float = Field(0.0, description="Momentum beta of the update's running average across the "
                                "run's calls; 0 disables, the paper uses negative values (-0.5).")

    def combine(self, cond, uncond, scale, context):
        spec = self.spec
        c, u = context.output(cond), context.output(uncond)
        dims = sample_dims(c)
        diff = c - u
        if spec.momentum != 0.0:
            running = context.state.get("momentum")
            diff = diff if running is None else diff + spec.momentum * running
            context.state["momentum"] = diff
        if spec.norm_threshold > 0:
            diff = diff * torch.minimum(torch.ones_like(diff), spec.norm_threshold / diff.norm(p=2, dim=dims, keepdim=True))
        d64, unit = diff.double(), torch.nn.functional.normalize(c.double(), dim=dims)
        parallel = (d64 * unit).sum(dim=dims, keepdim=True) * unit
        update = (d64 - parallel).to(diff.dtype) + spec.eta * parallel.to(diff.dtype)
        return context.prediction(u + scale * update)


class CFGZeroStarCombiner(sfumato.Combiner):
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
    Models", https://arxiv.org/abs/2503.18886), as diffusers' ``ClassifierFreeZeroStarGuidance``, on
    the raw outputs ``c`` and ``u`` (flattened per sample)::

        s*  = <c, u> / (||u||^2 + 1e-8)                         (the optimised scale, per sample)
        out = s* u + scale * (c - s* u)
        out = 0 for the run's first ``zero_init_steps`` steps     (zero initialisation)

    The zero-initialised steps are counted by the run's step (``SamplerStep.index_tensor``: every
    call of a step, Heun's corrector too); a call outside a sampling run has none.
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["cfg-zero-star"] = "cfg-zero-star"
        zero_init_steps: int = Field(1, ge=0, description="Steps at the start of each run whose output is zero "
                                     "(the paper zeroes about the first 4% of the steps); 0 disables.")

    def combine(self, cond, uncond, scale, context):
        c, u = context.output(cond), context.output(uncond)
        flat_c, flat_u = c.flatten(1).float(), u.flatten(1).float()
        optimised = (flat_c * flat_u).sum(dim=1, keepdim=True) / (flat_u.pow(2).sum(dim=1, keepdim=True) + 1e-8)
        optimised = optimised.to(c.dtype).reshape(-1, *([1] * (c.ndim - 1)))  # (B, 1, ...)
        scaled_u = u * optimised
        out = scaled_u + scale * (c - scaled_u)
        step = context.run.step
        if self.spec.zero_init_steps and step.count:
            out = torch.where(step.index_tensor < self.spec.zero_init_steps, torch.zeros_like(out), out)
        return context.prediction(out)


class TCFGCombiner(sfumato.Combiner):
    """Tangential damping CFG (Kwon et al. 2025, "TCFG: Tangential Damping Classifier-free
    Guidance", https://arxiv.org/abs/2503.18137), as diffusers' ``TangentialClassifierFreeGuidance``:
    the unconditional raw output loses its component along the second right-singular vector of
    the per-sample matrix ``[c; u]`` (``[2, C*H*W]``, SVD in float32), then plain CFG::

        V   = right singular vectors of [c; u];  u' = u V^T diag(1, 0) V
        out = u' + scale * (c - u')
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["tcfg"] = "tcfg"

    def combine(self, cond, uncond, scale, context):
        c, u = context.output(cond), context.output(uncond)
        stacked = torch.stack([c, u], dim=1).float().flatten(2)  # (B, 2, C*H*W)
        _, _, vh = torch.linalg.svd(stacked, full_matrices=False)  # (B, 2, C*H*W)
        kept = vh.clone()
        kept[:, 1] = 0
        coordinates = u.reshape(u.shape[0], 1, -1).float() @ vh.transpose(-2, -1)  # (B, 1, 2)
        damped = (coordinates @ kept).reshape(u.shape).to(c.dtype)
        return context.prediction(damped + scale * (c - damped))


class PerpNegCombiner(sfumato.Combiner):
    """Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm",
    https://arxiv.org/abs/2304.04968, eq. 8; ComfyUI's ``PerpNeg`` node): the negative prompt
    pushes away only along what it does not share with the positive one. With ``e`` the empty
    prompt's raw output (a branch: a third row of the same forward), ``c`` the positive and ``u`` the
    negative prompt's::

        pos = c - e,   neg = u - e,   perp = neg - (<neg, pos> / ||pos||^2) pos
        out = e + scale * (pos - neg_scale * perp)

    per sample (ComfyUI sums the inner products over the whole batch; where ``pos`` is zero, as for
    the empty prompt itself, ``perp = neg``, not ComfyUI's 0 / 0). A negative prompt equal to
    the empty one gives plain classifier-free guidance. Needs the pipeline's ``[text_encoder]``; the
    empty prompt's conditioning is the run's full one (``GuidanceContext.encode``: SDXL's second
    encoder and micro-conditioning, a ControlNet's image), so it batches with the call's rows.
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["perp-neg"] = "perp-neg"
        neg_scale: float = Field(1.0, ge=0.0, description="Weight of the negative prompt's perpendicular part; "
                                 "0 ignores the negative prompt (guidance against the empty prompt).")

    def branches(self, run):
        if run.components.get("text_encoder") is None:
            raise sfumato.SpecError("[[guidance]] cfg combiner 'perp-neg' needs the empty prompt's prediction, so "
                                    "the pipeline needs a [text_encoder]; use another combiner for models without one")
        encoded: dict[int, sfumato.Conditioning] = {}  # the empty prompt, encoded once per run and batch size

        def empty_prompt(cond: sfumato.Conditioning) -> sfumato.Conditioning:
            rows = cond.batch_size
            if rows not in encoded:  # the call's full conditioning (SDXL's extras, a ControlNet's image)
                with torch.no_grad():
                    encoded[rows] = run.encode([""] * rows)
            empty = encoded[rows]  # with the fields the call's conditioning has, so the rows concatenate
            empty = dataclasses.replace(empty, pooled=empty.pooled if cond.pooled is not None else None,
                                        mask=empty.mask if cond.mask is not None else None)
            return empty.to(cond.tokens.device, cond.tokens.dtype)

        return [sfumato.branches.Branch(conditioning=empty_prompt)]

    def combine(self, cond, uncond, scale, context):
        (empty,) = context.branches
        e = context.output(empty)
        pos, neg = context.output(cond) - e, context.output(uncond) - e
        dims = sample_dims(pos)
        # A positive prompt that predicts what the empty one does (pos = 0: the empty prompt itself)
        # has no direction to keep: nothing of neg lies along it (ComfyUI divides 0 by 0 there).
        norm = pos.pow(2).sum(dim=dims, keepdim=True).clamp_min(torch.finfo(pos.dtype).tiny)
        along = (neg * pos).sum(dim=dims, keepdim=True) / norm
        perpendicular = neg - along * pos
        return context.prediction(e + scale * (pos - self.spec.neg_scale * perpendicular))


COMBINERS = (CFGCombiner, APGCombiner, CFGZeroStarCombiner, TCFGCombiner, PerpNegCombiner)
