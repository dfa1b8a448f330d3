"""First-block cache for transformer denoisers (ParaAttention's FBCache, after TeaCache, Liu et al.
2024, https://arxiv.org/abs/2411.19108; diffusers' ``apply_first_block_cache``).

The denoiser's transformer blocks (``block`` points, run one after the other) are split into the
first block and the rest. Every forward runs the first block; when its residual (output minus
input) differs from the residual of the latest forward that ran every block by less than
``threshold`` (relative mean absolute difference), the rest is skipped and the residual the rest
added then is added again:

    diff = mean|r1 - r1_prev| / mean|r1_prev|
    out  = first(x) + (tail_out_prev - first_out_prev)           if diff < threshold

as diffusers' ``FBCHeadBlockHook`` / ``FBCBlockHook`` do (the test compares the two on one DiT).
The decision reads a tensor value, so each forward synchronises with the host once (as
diffusers' does); the caches that decide by the step (``deepcache``, ``taylorseer``) do not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

import sfumato

from .calls import ForwardClock, denoiser_of, patching_predictor
from .chain import BlockChain, LayersField


class FirstBlockCache(sfumato.Speedup):
    """Skip every block but the first while the first block's residual barely changes."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["first-block-cache"] = "first-block-cache"
        threshold: float = Field(0.05, ge=0.0, description="Largest relative change of the first block's residual "
                                 "that reuses the rest (diffusers' FirstBlockCacheConfig.threshold); 0 never reuses.")
        layers: list[str] | None = LayersField

    def neutral(self) -> bool:
        return self.spec.threshold == 0.0

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        if self.neutral():
            return predictor
        name, threshold = self.type_name(), self.spec.threshold
        denoiser = denoiser_of(context, name)
        chain = BlockChain(denoiser, self.spec.layers, name)
        state: dict[str, Tensor | bool | None] = {"residual": None, "first_out": None, "tail_residual": None,
                                                   "compute": True}

        def first(forward, x: Tensor, *args) -> Tensor:
            chain.start(x)
            out = chain.track(forward(x, *args))
            residual, previous = out - x, state["residual"]
            compute = (previous is None or previous.shape != residual.shape or state["tail_residual"] is None
                       or bool((residual - previous).abs().mean() / previous.abs().mean() > threshold))
            state["compute"] = compute
            if not compute:
                return chain.track(out + state["tail_residual"])
            state["residual"], state["first_out"] = residual, out
            return out

        def rest(forward, x: Tensor, *args) -> Tensor:
            chain.check(x)
            if not state["compute"]:
                return chain.track(x)
            out = chain.track(forward(x, *args))
            if chain.is_last():
                state["tail_residual"] = out - state["first_out"]
            return out

        patches = {point: (first if i == 0 else rest) for i, point in enumerate(chain.points)}
        return patching_predictor(predictor, denoiser, ForwardClock(context.step), patches)
