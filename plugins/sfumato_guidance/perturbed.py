"""Guidance by a perturbed model: ``pag``, ``seg`` and ``skip-layer``.

Each guides away from what the model predicts with part of it perturbed (a model patch,
``sfumato.model_patches``), on the positive conditioning:

    out = inner + scale * (positive - perturbed)

with ``inner`` the prediction of the guidance it wraps (``cfg`` listed before it: the CFG-guided
one) and ``positive`` / ``perturbed`` the conditional prediction without and with the patch. The
perturbed prediction is a branch (``sfumato.branches``): with ``cfg`` below it, one more third of
cfg's batch, ``[negative, positive, perturbed]``, in the same forward; without, a forward of its
own on ``[positive, perturbed]``. So ``[[guidance]]`` of ``cfg`` then ``pag`` computes

    uncond + cfg_scale * (cond - uncond) + pag_scale * (cond - perturbed)

as diffusers' ``StableDiffusionPAGPipeline`` does, in one forward per call.

- ``pag``: Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance"
  (https://arxiv.org/abs/2403.17377): the selected self-attention layers attend by the identity
  (each token keeps its own value, ``attention(q, k, v) = v``).
- ``seg``: Hong 2024, "Smoothed Energy Guidance: Guiding Diffusion Models with Reduced Energy
  Curvature of Attention" (https://arxiv.org/abs/2408.00760): the queries of the selected
  self-attention layers are blurred over the image grid with a Gaussian of ``blur_sigma`` tokens
  (SEG-SDXL's ``gaussian_blur_2d``; from 9999 on, infinitely: every query is their mean).
- ``skip-layer``: skip-layer guidance of Stable Diffusion 3.5 (diffusers' ``SkipLayerGuidance``):
  the selected transformer blocks are skipped (their output is their input).

``layers`` select the points by name as diffusers' ``pag_applied_layers`` do (regular expressions
searched in the module names: ``"mid"``, ``"down_blocks.2"``, ``"transformer_blocks.7"``).
``start`` / ``stop`` limit the method to a window of each run's steps (``SamplerStep``); outside
it the batch holds no perturbed rows.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, field_validator, model_validator
from torch import Tensor

import sfumato

#: From this blur on, SEG's blur is infinite (the query's mean), as SEG-SDXL's ``inf_blur``.
INFINITE_BLUR = 9999.0


class LayersSpec(sfumato.ComponentSpec):
    """Fields of every perturbed-model guidance: the layers, the window of steps."""

    layers: list[str] = Field(["mid"], min_length=1, description="Regular expressions selecting the perturbed "
                              "points by module name, as diffusers' pag_applied_layers (\"mid\", \"down_blocks.2\", "
                              "\"transformer_blocks.7\").")
    start: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of each run's steps before the method starts.")
    stop: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of each run's steps from which the method stops.")

    @field_validator("layers", mode="before")
    @classmethod
    def _one_layer_or_a_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("layers")
    @classmethod
    def _regular_expressions(cls, layers: list[str]) -> list[str]:
        for pattern in layers:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return layers

    @model_validator(mode="after")
    def _ordered_window(self):
        if self.start > self.stop:
            raise ValueError(f"start {self.start} is after stop {self.stop}: the window is [start, stop) of the steps")
        return self


class PerturbedModelGuidance(sfumato.Guidance):
    """``out = inner + scale * (positive - perturbed)``, the perturbed prediction a branch whose
    model patch ``patch`` is applied at the ``point_kind`` points ``layers`` select."""

    point_kind: ClassVar[str]

    @abstractmethod
    def patch(self) -> Callable[..., Tensor]:
        """The patch function run at every selected point (``sfumato.model_patches``)."""

    def scale_at(self, t: Tensor, context: sfumato.GuidanceContext) -> Tensor | float:
        """The scale of the call at timesteps ``t`` (a number, or ``[B]``)."""
        return self.spec.scale

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec, name = self.spec, self.type_name()
        if self.neutral():
            return predictor
        denoiser = context.components.get("denoiser")
        if denoiser is None or not hasattr(denoiser, "perturbation_points"):
            raise sfumato.SpecError(f"[[guidance]] {name} perturbs the [denoiser], which this run's guidance context "
                                    "lacks or which advertises no perturbation points")
        points = sfumato.model_patches.select_points(denoiser.perturbation_points(), spec.layers, self.point_kind,
                                                     f"[[guidance]] {name} layers")
        patch = self.patch()
        branch = sfumato.branches.Branch(patches={point: patch for point in points}, model=denoiser)
        declared = context.add_branch(branch)

        def guided(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            branch.active = context.step.within(spec.start, spec.stop)
            if not branch.active:
                return predictor(x, t, cond)
            out, positive, perturbed = sfumato.branches.with_branch(branch, declared, predictor, x, t, cond)
            scale = self.scale_at(t, context)
            if isinstance(scale, Tensor):
                scale = scale.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
            return sfumato.Prediction(x0=out.x0 + scale * (positive.x0 - perturbed.x0),
                                      eps=out.eps + scale * (positive.eps - perturbed.eps), alpha_bar=out.alpha_bar)

        return guided

    def neutral(self) -> bool:
        """Whether the method changes nothing (scale 0): then it adds no branch."""
        return self.spec.scale == 0.0


def identity_attention(q: Tensor, k: Tensor, v: Tensor, attend, size) -> Tensor:
    """PAG's perturbed self-attention: the identity score matrix, so each token keeps its value."""
    return v


class PerturbedAttentionGuidance(PerturbedModelGuidance):
    """PAG: guidance away from the prediction whose selected self-attention is the identity."""

    point_kind = sfumato.model_patches.SELF_ATTENTION

    class Spec(LayersSpec):
        type: Literal["pag"] = "pag"
        scale: float = Field(3.0, description="PAG scale s in out + s (cond - perturbed) (diffusers' pag_scale); "
                             "0 is exactly unguided.")
        adaptive_scale: float = Field(0.0, ge=0.0, description="Lowers the scale towards the end of the run: "
                                      "max(0, scale - adaptive_scale * (T - t)) (diffusers' pag_adaptive_scale).")

    def patch(self):
        return identity_attention

    def scale_at(self, t, context):
        if self.spec.adaptive_scale == 0.0:
            return self.spec.scale
        remaining = context.schedule.num_timesteps - t.float()
        return (self.spec.scale - self.spec.adaptive_scale * remaining).clamp_min(0.0)


def gaussian_blur(grid: Tensor, sigma: float) -> Tensor:
    """``[B, C, H, W]`` blurred per channel with a Gaussian of ``sigma`` pixels, as SEG-SDXL's
    ``gaussian_blur_2d``: kernel side ``ceil(6 sigma) + 1`` made odd, at most the grid's shorter
    side made odd (rounded up, as diffusers clamps it, so the reflect padding fits), reflect
    padding; from ``INFINITE_BLUR`` on, every pixel becomes the channel's mean."""
    if sigma >= INFINITE_BLUR:
        return grid.mean(dim=(-2, -1), keepdim=True).expand_as(grid)
    side = min(grid.shape[-2:])
    kernel_size = min(math.ceil(6 * sigma) + 1 - math.ceil(6 * sigma) % 2, side - (side % 2 - 1))
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = (pdf / pdf.sum()).to(grid)
    kernel = (kernel1d[:, None] @ kernel1d[None, :]).expand(grid.shape[1], 1, kernel_size, kernel_size)
    padded = F.pad(grid, [kernel_size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=grid.shape[1])


def grid_size(tokens: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """The image grid of ``tokens`` query tokens: ``size`` where the model gives it, else a square."""
    if size is not None:
        return size
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise sfumato.SpecError(f"[[guidance]] seg blurs the queries over the image grid, but this attention gives no "
                                f"grid and its {tokens} tokens are no square; choose layers whose attention gives one")
    return side, side


class SmoothedEnergyGuidance(PerturbedModelGuidance):
    """SEG: guidance away from the prediction whose selected self-attention has blurred queries."""

    point_kind = sfumato.model_patches.SELF_ATTENTION

    class Spec(LayersSpec):
        type: Literal["seg"] = "seg"
        scale: float = Field(3.0, description="SEG scale s in out + s (cond - blurred) (SEG-SDXL's seg_scale); "
                             "0 is exactly unguided.")
        blur_sigma: float = Field(9999999.0, gt=0.0, description="Standard deviation of the query blur in tokens; "
                                  "from 9999 on, infinite (every query the mean: the paper's best).")

    def patch(self):
        sigma = self.spec.blur_sigma

        def smoothed_attention(q: Tensor, k: Tensor, v: Tensor, attend, size) -> Tensor:
            height, width = grid_size(q.shape[2], size)
            grid = rearrange(q, "b heads (h w) d -> b (heads d) h w", h=height, w=width)
            blurred = rearrange(gaussian_blur(grid, sigma), "b (heads d) h w -> b heads (h w) d", heads=q.shape[1])
            return attend(blurred, k, v)

        return smoothed_attention


def skipped_block(forward, x: Tensor, *args) -> Tensor:
    """Skip-layer guidance's perturbed block: skipped, its output is its input."""
    return x


class SkipLayerGuidance(PerturbedModelGuidance):
    """SLG: guidance away from the prediction with the selected transformer blocks skipped."""

    point_kind = sfumato.model_patches.BLOCK

    class Spec(LayersSpec):
        type: Literal["skip-layer"] = "skip-layer"
        scale: float = Field(2.8, description="SLG scale s in out + s (cond - skipped) (diffusers' "
                             "skip_layer_guidance_scale); 0 is exactly unguided.")
        layers: list[str] = Field(..., min_length=1, description="Regular expressions selecting the skipped blocks "
                                  "by module name (\"transformer_blocks.7\", \"mid_block\"); SD 3.5 Medium uses blocks "
                                  "7, 8 and 9.")
        start: float = Field(0.01, ge=0.0, le=1.0, description="Fraction of each run's steps before the method starts.")
        stop: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of each run's steps from which the method stops.")

    def patch(self):
        return skipped_block


PERTURBED = (PerturbedAttentionGuidance, SmoothedEnergyGuidance, SkipLayerGuidance)
