"""TaylorSeer (Liu et al. 2025, "From Reusing to Forecasting: Accelerating Diffusion Models with
TaylorSeers", https://arxiv.org/abs/2503.06923; diffusers' ``apply_taylorseer_cache``): on the
steps between full computations, forecast features by a Taylor series in the step index from
finite differences of the latest computed ones,

    f(i) ~ sum_k  Delta^k f(i0) / k! * (i - i0)^k,   Delta^{k+1} = (Delta^k f(i0) - Delta^k f(i_prev)) / (i0 - i_prev)

Schedule (diffusers'): steps before ``warmup`` compute, then every ``interval``-th step
(``(i - warmup - 1) % interval == 0``), and every step from ``cooldown`` on.

``target`` chooses what is forecast:

- ``"blocks"`` (default): the output of the denoiser's chain of transformer blocks (``block``
  points, ``layers``); on a forecast step every block is skipped (diffusers' lite mode, which
  forecasts the output projection and skips the blocks, skips the same work);
- ``"attention"``: every self-attention's output (diffusers' default: the attention modules);
  the projections, feed-forwards and norms still run.

Each forward slot of a step (Heun's corrector) has a series of its own. Decisions read the step
index: no host synchronisation. Factors are kept in the features' dtype (diffusers' default keeps
them in bfloat16; its ``taylor_factors_dtype=torch.float32`` is this).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import Tensor

import sfumato

from .calls import ForwardClock, denoiser_of, patching_predictor, points_of
from .chain import BlockChain, LayersField


class TaylorSeries:
    """The finite-difference factors of one feature, updated on computed steps."""

    def __init__(self, order: int):
        self.order = order
        self.factors: list[Tensor] = []
        self.step: int | None = None

    def update(self, features: Tensor, step: int) -> None:
        factors = [features]
        if self.step is not None and self.factors and self.factors[0].shape == features.shape:
            delta = step - self.step
            for previous in self.factors[: self.order]:
                factors.append((factors[-1] - previous) / delta)
        self.factors, self.step = factors, step

    def forecast(self, step: int) -> Tensor:
        offset = step - self.step
        out = self.factors[0]
        for k, factor in enumerate(self.factors[1:], start=1):
            out = out + factor * (offset**k / math.factorial(k))
        return out

    def usable(self, features_like: Tensor) -> bool:
        return self.step is not None and self.factors[0].shape == features_like.shape


class TaylorSeer(sfumato.Speedup):
    """Forecast the blocks' (or attentions') output by a Taylor series between computed steps."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["taylorseer"] = "taylorseer"
        interval: int = Field(5, ge=1, description="After the warm-up, compute every this many steps and forecast "
                              "in between (diffusers' cache_interval); 1 computes every step (output unchanged).")
        warmup: int = Field(3, ge=0, description="Steps computed at the start to fit the series (diffusers' "
                            "disable_cache_before_step).")
        cooldown: int | None = Field(None, ge=0, description="Compute every step from this one on (diffusers' "
                                     "disable_cache_after_step); none: forecast to the end.")
        order: int = Field(1, ge=0, le=4, description="Highest order of the Taylor series (diffusers' max_order); "
                           "0 reuses the latest features.")
        target: Literal["blocks", "attention"] = Field("blocks", description="Forecast the output of the chain of "
                                                        "transformer blocks (skipping all of them), or of each "
                                                        "self-attention (skipping only the attention).")
        layers: list[str] | None = LayersField

    def neutral(self) -> bool:
        return self.spec.interval == 1

    def computes(self, index: int) -> bool:
        """Whether step ``index`` runs the features rather than forecasting them (diffusers' rule)."""
        spec = self.spec
        return (index < spec.warmup or (index - spec.warmup - 1) % spec.interval == 0
                or (spec.cooldown is not None and index >= spec.cooldown))

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        if self.neutral():
            return predictor
        name, order = self.type_name(), self.spec.order
        denoiser = denoiser_of(context, name)
        clock = ForwardClock(context.step)
        series: dict[tuple[str, int], TaylorSeries] = {}  # (point, slot) -> its series

        def series_of(point: str) -> TaylorSeries:
            return series.setdefault((point, clock.slot), TaylorSeries(order))

        def forecasting(like: Tensor, point: str) -> bool:
            return clock.in_run and not self.computes(clock.index) and series_of(point).usable(like)

        if self.spec.target == "attention":
            points = points_of(denoiser, self.spec.layers, sfumato.model_patches.SELF_ATTENTION, name)

            def attention_patch(point: str):
                def patch(q: Tensor, k: Tensor, v: Tensor, attend, size) -> Tensor:
                    if forecasting(q, point):
                        return series_of(point).forecast(clock.index)
                    out = attend(q, k, v)
                    if clock.in_run:
                        series_of(point).update(out, clock.index)
                    return out
                return patch

            patches = {point: attention_patch(point) for point in points}
            return patching_predictor(predictor, denoiser, clock, patches)

        chain = BlockChain(denoiser, self.spec.layers, name)
        last = chain.points[-1]

        def block_patch(i: int):
            is_last = i == len(chain.points) - 1

            def patch(forward, x: Tensor, *args) -> Tensor:
                chain.start(x) if i == 0 else chain.check(x)
                if forecasting(x, last):  # skip the block: the last one's forecast stands for the chain
                    return chain.track(series_of(last).forecast(clock.index) if is_last else x)
                out = chain.track(forward(x, *args))
                if is_last and clock.in_run:
                    series_of(last).update(out, clock.index)
                return out

            return patch

        patches = {point: block_patch(i) for i, point in enumerate(chain.points)}
        return patching_predictor(predictor, denoiser, clock, patches)
