"""Components that add to the conditioning: once per call, and beside every denoiser call.

The core builds a call's ``Conditioning`` from ``[text_encoder]`` (or labels) and runs the
``[denoiser]``. A model family that needs more (SDXL's second text encoder, pooled embedding and
size micro-conditioning; a ControlNet's residuals) gets it from components in any spec table,
the core's or one a plugin declared (``register_spec_tables``), through two optional methods:

``extra_conditioning(cond, request) -> Conditioning``
    called once per generation call, after the core conditioning is built (``num_images`` rows
    per prompt, on the pipeline's device and dtype), in spec order (the core tables, then the
    declared ones, list items in order). It returns the conditioning with what it adds, usually
    ``cond.with_extras(...)`` so the negative carries it too. ``request`` is a
    ``ConditioningRequest``: the prompts, negative prompts, size and the call inputs the
    component declared.

``wrap_denoiser(denoiser, context) -> denoiser``
    called for every sampling run (each chunk of a call); returns a callable with the denoiser's
    signature ``(x, t, cond) -> raw output`` that the predictor then calls instead, for every
    forward of the run (each CFG batch included): the place for a side network that reads the
    same ``x`` and ``t`` (a ControlNet). ``context`` is the run's ``GuidanceContext`` (its ``step``
    says where the sampler is, for a step window).

A component that takes call arguments names them in ``call_inputs`` (a class attribute, a tuple
of keyword names): ``pipe(prompt, control_image=image)`` passes ``control_image`` through
``ConditioningRequest.inputs``; a keyword no component of the pipeline declares is an error that
lists those that are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from torch import Tensor

from .conditioning import Conditioning

if TYPE_CHECKING:
    from .interfaces import GuidanceContext
    from .pipeline import Pipeline

#: ``(x, t, cond) -> raw prediction``: what a denoiser is called as.
DenoiserCall = Callable[[Tensor, Tensor, Conditioning], Tensor]


@dataclass
class ConditioningRequest:
    """What a component's ``extra_conditioning`` knows of the call.

    :param pipe: the pipeline (its other components: ``pipe.component("text_encoder_2")``).
    :param prompts: one prompt per sample (``num_images`` rows each); empty for a call without.
    :param negative_prompts: one per sample; None where the call gave no negative prompt (models
        that treat "no negative" apart from the empty prompt, as SDXL does, can tell).
    :param height: the call's image height in pixels. :param width: its width.
    :param inputs: the call's keyword arguments that components declared in ``call_inputs``.
    """

    pipe: Pipeline
    prompts: list[str]
    negative_prompts: list[str | None]
    height: int
    width: int
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.prompts)


def pipeline_components(pipe: Pipeline) -> Iterator[tuple[str, Any]]:
    """``(where, component)`` for every built component in spec order: the single tables (core
    and declared), then each declared list's items (``[[controlnet]] #1``)."""
    for table, component in pipe.components.items():
        yield f"[{table}]", component
    for table, items in getattr(pipe, "component_lists", {}).items():
        for i, component in enumerate(items):
            yield f"[[{table}]] #{i + 1}", component


def declared_inputs(pipe: Pipeline) -> dict[str, str]:
    """The call inputs the pipeline's components declare: keyword -> the table that takes it."""
    declared: dict[str, str] = {}
    for where, component in pipeline_components(pipe):
        for name in getattr(component, "call_inputs", ()):
            declared.setdefault(name, where)
    return declared


def check_inputs(pipe: Pipeline, inputs: dict[str, Any]) -> None:
    """Every keyword in ``inputs`` is declared by a component of ``pipe``; else an ``ArgumentError``
    naming it and the inputs this pipeline takes."""
    from .blocks import ArgumentError

    declared = declared_inputs(pipe)
    for name in inputs:
        if name not in declared:
            taken = ", ".join(f"{n} ({where})" for n, where in declared.items()) or "none"
            raise ArgumentError(name, f"no component of this pipeline takes {name!r}; the inputs its components "
                                f"take: {taken}")


def extra_conditioning(cond: Conditioning, request: ConditioningRequest) -> Conditioning:
    """``cond`` after every component's ``extra_conditioning``, in spec order."""
    for _, component in pipeline_components(request.pipe):
        method = getattr(component, "extra_conditioning", None)
        if method is not None:
            cond = method(cond, request)
    return cond


def wrap_denoiser(pipe: Pipeline, denoiser: DenoiserCall, context: GuidanceContext) -> DenoiserCall:
    """``denoiser`` wrapped by every component's ``wrap_denoiser``, in spec order (the first
    listed innermost)."""
    for _, component in pipeline_components(pipe):
        method = getattr(component, "wrap_denoiser", None)
        if method is not None:
            denoiser = method(denoiser, context)
    return denoiser
