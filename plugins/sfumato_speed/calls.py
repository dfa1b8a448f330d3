"""What every speedup needs around the denoiser: its points, and which forward of the run a call is.

A speedup wraps the unguided predictor (``sfumato.Speedup``), so each of its calls is one forward
of the denoiser on the batch guidance made. ``ForwardClock`` says which step the forward belongs
to (``context.step``, ``sfumato.SamplerStep``) and its number among that step's forwards (its
*slot*: Heun's corrector is slot 1), so a cache keeps one entry per slot and a two-call sampler
reuses the corrector's features for the corrector.
"""

from __future__ import annotations

from typing import Callable, Mapping

from torch import Tensor

import sfumato


class ForwardClock:
    """The step and slot of the forward being run (``tick`` before each).

    :param step: the run's ``SamplerStep`` (``context.step``).
    """

    def __init__(self, step: sfumato.SamplerStep):
        self.step = step
        self.index, self.slot = -1, 0
        self.in_run = False

    def tick(self) -> None:
        """Move to the next forward: the same step's next slot, or slot 0 of a new step."""
        index = self.step.index
        self.slot = self.slot + 1 if index == self.index else 0
        self.index = index
        self.in_run = self.step.count > 0


def denoiser_of(context: sfumato.GuidanceContext, name: str) -> sfumato.Denoiser:
    """The run's ``[denoiser]``, which must advertise perturbation points."""
    denoiser = context.components.get("denoiser")
    if denoiser is None or not hasattr(denoiser, "perturbation_points"):
        raise sfumato.SpecError(f"[[speedups]] {name} patches the [denoiser], which this run lacks or which advertises "
                                "no perturbation points")
    return denoiser


def points_of(denoiser: sfumato.Denoiser, layers: list[str] | None, kind: str, name: str) -> list[str]:
    """The ``kind`` points ``layers`` select (every one when ``layers`` is None); an error naming
    the denoiser's points of other kinds when it has none of this kind."""
    points = denoiser.perturbation_points()
    if layers is None:
        selected = [point for point, point_kind in points.items() if point_kind == kind]
        if not selected:
            kinds = sorted(set(points.values()))
            raise sfumato.SpecError(f"[[speedups]] {name} works on {kind} points, and this [denoiser] "
                                    f"{denoiser.type_name()!r} has none (its points are of the kinds: "
                                    f"{', '.join(kinds) or 'none'})")
        return selected
    return sfumato.model_patches.select_points(points, layers, kind, f"[[speedups]] {name} layers")


def patching_predictor(predictor: sfumato.Predictor, denoiser: sfumato.Denoiser, clock: ForwardClock,
                       patches: Mapping[str, Callable[..., Tensor]],
                       before: Callable[[Tensor], None] | None = None) -> sfumato.Predictor:
    """``predictor`` with ``patches`` (point -> patch function, on every row) applied to
    ``denoiser`` during each call, the clock ticked before it (and ``before(x)`` called)."""
    point_patches = {point: [sfumato.PointPatch(function)] for point, function in patches.items()}

    def fast(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
        clock.tick()
        if before is not None:
            before(x)
        with denoiser.patched(point_patches):
            return predictor(x, t, cond)

    return fast

