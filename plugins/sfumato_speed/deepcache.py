"""DeepCache (Ma et al. 2023, "DeepCache: Accelerating Diffusion Models for Free",
https://arxiv.org/abs/2312.00858): the U-Net's deep features change little from one step to the
next, so compute them every ``interval`` steps and reuse them in between.

The U-Net advertises its deep branches as ``deep-branch`` points (``deep.0`` is everything below
its first resolution level; ``sfumato.model_patches``). On a refresh step (``index % interval ==
0``) the branch ``deep.{branch}`` runs and its output is stored; on the steps between, the
patch returns the stored output, so only the shallow blocks above the branch run (down block,
up block, and the input and output layers). One entry is kept per forward of a step (Heun's
corrector reuses the corrector's), and a forward whose batch differs from the stored one (a
guidance step window adding rows) recomputes. Decisions read the step index, a Python int: no
host synchronisation.

The paper's skip branch is chosen per layer inside the first block; here the branch is a whole
resolution level (``branch = 0``: the shallowest, the largest saving), with the uniform schedule
of the paper's section 3.3 inside a window of the steps (``start`` / ``stop``; outside it every
step refreshes: the early steps lay out the image).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import Tensor

import sfumato

from .calls import ForwardClock, denoiser_of, patching_predictor, points_of


class DeepCache(sfumato.Speedup):
    """Reuse the U-Net's deep features (the ``deep.{branch}`` point) between refresh steps."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["deepcache"] = "deepcache"
        interval: int = Field(3, ge=1, description="Refresh the deep features every this many steps (the paper's N); "
                              "1 refreshes every step (no saving, output unchanged).")
        branch: int = Field(0, ge=0, description="Which deep branch to cache: 0 is everything below the U-Net's first "
                            "resolution level (the most saved work), 1 below the second, ...")
        start: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of each run's steps computed in full before "
                             "caching starts (the early steps lay out the image).")
        stop: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of each run's steps from which every step is "
                            "computed in full again.")

        @model_validator(mode="after")
        def _ordered_window(self):
            if self.start > self.stop:
                raise ValueError(f"start {self.start} is after stop {self.stop}: caching happens in [start, stop) of "
                                 "the steps")
            return self

    def neutral(self) -> bool:
        return self.spec.interval == 1 or self.spec.start == self.spec.stop

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        if self.neutral():
            return predictor
        spec, name = self.spec, self.type_name()
        denoiser = denoiser_of(context, name)
        branches = points_of(denoiser, None, sfumato.model_patches.DEEP_BRANCH, name)
        if spec.branch >= len(branches):
            raise sfumato.SpecError(f"[[speedups]] {name} branch {spec.branch} is out of range: this [denoiser] has "
                                    f"{len(branches)} deep branches ({', '.join(branches)}), so branch is 0 to "
                                    f"{len(branches) - 1}")
        clock = ForwardClock(context.step)
        stored: dict[int, Tensor] = {}  # slot -> the branch's output at the latest refresh

        def cached_branch(forward, h: Tensor, *args) -> Tensor:
            if not clock.in_run:  # called outside a sampling run: no steps to cache across
                return forward(h, *args)
            previous = stored.get(clock.slot)
            refresh = clock.index % spec.interval == 0 or not context.step.within(spec.start, spec.stop)
            if refresh or previous is None or previous.shape[0] != h.shape[0]:
                previous = stored[clock.slot] = forward(h, *args)
            return previous

        return patching_predictor(predictor, denoiser, clock, {branches[spec.branch]: cached_branch})
