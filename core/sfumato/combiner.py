"""Combiners: how classifier-free guidance turns a conditional and an unconditional prediction
into the guided one, as a component kind of its own (``combiner``).

Classifier-free guidance and its variants (APG, CFG-Zero*, TCFG, ...) differ only in that
combination; the batched forward on ``[negative, positive]``, guidance rescale and the guidance
interval are the same for all of them. So the ``cfg`` guidance owns the forward, rescale and the
interval, and its ``combiner`` field selects the combination, by name or table, as a scheduler's
``sigmas`` selects a sigma schedule::

    [[guidance]]
    type = "cfg"
    scale = 5.0
    rescale = 0.7                                   # applies to whatever the combiner returns
    combiner = "apg"                                # a registered name
    # combiner = { type = "apg", momentum = -0.5 }  # or a table with its fields

A combiner plugin writes one method, ``combine(cond, uncond, scale, context) -> Prediction``; it is
registered with ``register_components`` like any component, and every sampler, rescale, the
interval, classifier and CLIP guidance (in either order) and the branch-based guidance of
``sfumato.branches`` (PAG, SEG, ...) work with it unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

from torch import Tensor

from .component import Component, ComponentSpec
from .kind_field import ComponentChoice
from .prediction import Prediction

if TYPE_CHECKING:
    from .branches import Branch
    from .interfaces import GuidanceContext


@dataclass
class CombineContext:
    """What a combiner sees at one model call besides the two predictions.

    :param x: the sample ``x_t`` ``[B, ...]`` the predictions are for (the model interface's
        variance-preserving sample).
    :param t: the timesteps ``[B]`` of the call.
    :param run: the run's ``GuidanceContext``: the formulation (``run.schedule``), the plan
        (``run.plan``) and the step (``run.step``, ``sfumato.SamplerStep``).
    :param state: this run's state of this combiner (a dict that starts empty each run and lives
        until the run ends: a momentum buffer goes here, never on the combiner).
    :param branches: the predictions of the branches the combiner declared (``Combiner.branches``),
        in order, from the same forward as ``cond`` and ``uncond``.
    """

    x: Tensor
    t: Tensor
    run: GuidanceContext
    state: dict[str, Any] = field(default_factory=dict)
    branches: list[Prediction] = field(default_factory=list)

    def output(self, prediction: Prediction) -> Tensor:
        """``prediction`` as the network's raw output (eps for epsilon models, v, the flow
        velocity, EDM's F): the space diffusers' guiders combine in."""
        return self.run.schedule.to_output(prediction, self.x, self.t)

    def prediction(self, output: Tensor) -> Prediction:
        """The ``Prediction`` of a raw network ``output`` at this call's ``(x, t)``."""
        return self.run.schedule.to_prediction(output, self.x, self.t)


class Combiner(Component, ABC):
    """Combines the conditional and unconditional predictions of one model call.

    ``combine`` is called once per guided model call (twice per step for Heun), never with
    ``scale == 1`` (classifier-free guidance then returns the conditional prediction without the
    unconditional pass). A combiner keeps no state on itself: what it carries from call to call
    lives in ``context.state``, which starts empty each run.
    """

    kind: ClassVar[str] = "combiner"

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def combine(self, cond: Prediction, uncond: Prediction, scale: float, context: CombineContext) -> Prediction:
        """The guided prediction. :param cond: the conditional (positive) prediction.
        :param uncond: the unconditional (negative-prompt) one. :param scale: the guidance scale."""

    def branches(self, run: GuidanceContext) -> list[Branch]:
        """Further predictions ``combine`` needs at every call, computed in the same forward
        (``sfumato.branches.Branch``; perp-neg: the empty prompt's). Called once per run, in the
        guidance's ``wrap``; their predictions arrive in ``CombineContext.branches``. None by default."""
        return []


#: The ``combiner`` field of a guidance Spec: a registered combiner's name, or a table
#: ``{type = name, field = value, ...}``. Declare it as
#: ``combiner: sfumato.CombinerField = Field("cfg", description=...)`` and build the combiner
#: with ``sfumato.COMBINER.build(spec.combiner)``.
COMBINER = ComponentChoice("combiner", example='{ type = "apg", momentum = -0.5 }')
CombinerField = Annotated[Union[str, ComponentSpec], COMBINER]
