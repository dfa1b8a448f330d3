"""Generation requests: one image as a user asks for it (a line of a prompt file, a server
request), validated by pydantic against the loaded plugins, and run in batches.

A request may change the cheap, weightless parts of the spec (the sampler, the guidance scale,
steps and size) but never its models, so one loaded pipeline serves every request. Requests that
agree on everything but their conditioning and seed (``Sample.batch_key``) run as one forward
through ``sfumato.generate`` with per-sample ``seeds``: each sample's noise is what a one-sample
call with its seed draws, and its lock is that call's, so ``sfumato generate --from`` replays it.

Floating-point kernels are not batch-invariant: on a CPU the shapes U-Net's output rows differ
in the last bits between a batch of one and a batch of five, and with several threads between
row positions of one batch, which rounding to 8 bits turns into an occasional changed pixel
value. A sample's bytes are exact for a given batch shape and row (``sfumato.batch`` fixes both
per line of a prompt file); across batch sizes they agree to that rounding.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional
from weakref import WeakKeyDictionary

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from torch import nn

from .blocks import native_size
from .component import ComponentSpec
from .errors import SpecError
from .generation import (
    MAX_SEED, MAX_SIDE, ArgumentError, check_arguments, check_model_arguments, condition, generate,
    lock_arguments,
)
from .outputs import make_lock
from .pipeline import Pipeline
from .sampling import StepCallback
from .specs import component_union

#: Longest prompt or negative prompt in characters (CLIP reads 77 tokens; this bounds the work
#: and memory a request may ask for, not what a model can use).
MAX_PROMPT_CHARS = 8192
#: A request's field for each argument of ``sfumato.generate`` (what an ``ArgumentError`` names).
FIELDS = {"prompt": "prompt", "negative_prompt": "negative", "labels": "label", "steps": "steps", "seed": "seed",
          "seeds": "seed", "height": "height", "width": "width", "num_images": "num_images"}


class GenerationRequest(BaseModel):
    """What one image may ask for, beyond the spec. Unset fields take the spec's values (the
    task's size, the scheduler's steps, the guidance's scale); the generated model adds
    ``scheduler``, a table of any registered scheduler type with its fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Optional[str] = Field(None, max_length=MAX_PROMPT_CHARS, description="What to draw (text models).")
    negative: Optional[str] = Field(None, max_length=MAX_PROMPT_CHARS,
                                    description="Negative prompt: what classifier-free guidance steers away from.")
    label: Optional[int] = Field(None, ge=0,
                                 description="Class label, for class-conditional models (not with a prompt).")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="0 to 2**64 - 1.")
    steps: Optional[int] = Field(None, ge=1, description="Sampling steps, 1 to the model's training timesteps.")
    height: Optional[int] = Field(None, ge=1, le=MAX_SIDE, description="Pixels, a multiple of the model's downscale.")
    width: Optional[int] = Field(None, ge=1, le=MAX_SIDE, description="Pixels, a multiple of the model's downscale.")
    guidance: Optional[float] = Field(
        None, allow_inf_nan=False, description="Guidance scale: replaces the scale of the spec's first [[guidance]].")


_models: WeakKeyDictionary = WeakKeyDictionary()


def request_model(registry: Any, base: type[GenerationRequest] = GenerationRequest) -> type[GenerationRequest]:
    """``base`` with a ``scheduler`` field validated by the registered schedulers' specs (a
    discriminated union on ``type``), so a plugin's sampler and its fields are valid requests and
    appear in the JSON schema. Cached per registry and base."""
    cache = _models.setdefault(registry, {})
    if base not in cache:
        union = component_union(registry, "scheduler")
        fields: dict[str, Any] = {}
        if union is not None:
            fields["scheduler"] = (Optional[union], Field(None, description="The sampler and its settings, "
                                                          "replacing the spec's [scheduler] table."))
        cache[base] = create_model(base.__name__, __base__=base, **fields)
    return cache[base]


def validation_messages(exc: ValidationError) -> list[str]:
    """pydantic's errors as ``field: message (got value)``, one per problem."""
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "request"
        got = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {str(error.get('input'))[:40]!r})"
        out.append(f"{where}: {error['msg']}{got}")
    return out


@dataclass(frozen=True)
class Sample:
    """One image to make, every choice resolved: a request with its seed and size filled in."""

    prompt: str | None
    negative: str | None
    label: int | None
    seed: int
    steps: int | None
    height: int
    width: int
    guidance: float | None = None
    scheduler: ComponentSpec | None = None

    @property
    def conditioning(self) -> str:
        """``prompt``, ``label`` or ``none``: which conditioning the sample's batch encodes."""
        return "prompt" if self.prompt is not None else "label" if self.label is not None else "none"

    @property
    def variant_key(self) -> tuple:
        """What the sample changes in the pipeline: its sampler and guidance scale."""
        return (self.scheduler.model_dump_json() if self.scheduler is not None else None, self.guidance)

    @property
    def batch_key(self) -> tuple:
        """Samples with equal keys run in one forward: same steps, size, sampler, guidance and
        kind of conditioning; prompts, negatives, labels and seeds may differ."""
        return (self.steps, self.height, self.width, *self.variant_key, self.conditioning)


def lock_sha256(lock: dict[str, Any]) -> str:
    """SHA-256 of a lock's canonical JSON: two images with equal hashes came from the same call."""
    return hashlib.sha256(json.dumps(lock, sort_keys=True).encode("utf-8")).hexdigest()


class SampleRunner:
    """Runs samples on one loaded pipeline: checks them against the model, gives each its lock,
    and runs batches of compatible ones as one call of ``sfumato.generate``.

    The pipeline variants a request's ``scheduler`` and ``guidance`` ask for share the
    pipeline's modules; only the scheduler, or the guidance entry whose scale changes, is rebuilt.
    """

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self.height, self.width = default_size(pipe)
        self._variants: dict[tuple, Pipeline] = {}
        self._checked: set[tuple] = set()
        self._locks: dict[int, dict[str, Any]] = {}

    def sample(self, request: GenerationRequest, seed: int) -> Sample:
        """The sample a validated request asks for, with ``seed`` where it gives none."""
        return Sample(
            prompt=request.prompt, negative=request.negative, label=request.label,
            seed=request.seed if request.seed is not None else seed, steps=request.steps,
            height=request.height or self.height, width=request.width or self.width, guidance=request.guidance,
            scheduler=getattr(request, "scheduler", None),
        )

    def check(self, sample: Sample, num_images: int = 1) -> None:
        """Everything the model decides about a sample, before any work: steps, size, the pixel
        budget for ``num_images`` of it, its conditioning, its sampler and guidance.

        :raises ArgumentError: naming the request's field (``FIELDS``).
        """
        try:
            check_arguments(num_images=num_images, height=sample.height, width=sample.width, steps=sample.steps,
                            seed=sample.seed)
            check_model_arguments(self.variant(sample), steps=sample.steps, height=sample.height, width=sample.width)
            self._check_conditioning(sample)
        except ArgumentError as exc:
            raise ArgumentError(FIELDS.get(exc.argument, exc.argument), exc.problem) from None

    def _check_conditioning(self, sample: Sample) -> None:
        """What ``condition`` refuses (a prompt with a label, a negative without a prompt, a prompt
        for a model without a text encoder, a label that is not a class): a placeholder prompt is
        encoded once per kind of conditioning; labels are checked every time (no encoding)."""
        kind = (sample.conditioning, sample.negative is not None)
        if sample.label is None and kind in self._checked:
            return
        try:
            condition(self.pipe, [""] if sample.prompt is not None else [], sample.negative,
                      [sample.label] if sample.label is not None else [], 1)
        except ArgumentError:
            raise
        except SpecError as exc:  # check_labels: the label is not a class of the model
            raise ArgumentError("labels", str(exc)) from None
        self._checked.add(kind)

    def variant(self, sample: Sample) -> Pipeline:
        """The pipeline with the sample's sampler and guidance scale (cached; shares modules)."""
        if sample.variant_key not in self._variants:
            self._variants[sample.variant_key] = pipeline_variant(self.pipe, sample.scheduler, sample.guidance)
        return self._variants[sample.variant_key]

    def lock(self, sample: Sample) -> dict[str, Any]:
        """The lock of the one-sample call this sample is (what ``generate --from`` replays). All
        but its arguments is computed once per pipeline variant."""
        variant = self.variant(sample)
        if id(variant) not in self._locks:
            self._locks[id(variant)] = make_lock(variant, {})
        return {**self._locks[id(variant)], "arguments": lock_arguments(
            prompt=sample.prompt, negative_prompt=sample.negative, labels=sample.label, steps=sample.steps,
            seed=sample.seed, num_images=1, height=sample.height, width=sample.width,
        )}

    def run(self, samples: list[Sample], callback: StepCallback | None = None) -> list[Image.Image]:
        """The images of ``samples`` (all with one ``batch_key``), made in one call, in order."""
        first = samples[0]
        if any(s.batch_key != first.batch_key for s in samples):
            raise ValueError("a batch's samples must share one batch_key")
        arguments: dict[str, Any] = {}
        if first.conditioning == "prompt":
            arguments = {"prompt": [s.prompt for s in samples], "negative_prompt": [s.negative for s in samples]}
        elif first.conditioning == "label":
            arguments = {"labels": [s.label for s in samples]}
        variant = self.variant(first)
        with variant.spec.runtime.call_context(variant.device):
            result = generate(variant, **arguments, seeds=[s.seed for s in samples], steps=first.steps,
                              height=first.height, width=first.width, callback=callback, progress=False)
        return result.images


def default_size(pipe: Pipeline) -> tuple[int, int]:
    """``(height, width)`` a request gets when it gives none: ``generate``'s default, the task's
    size else the model's own (``sfumato.blocks.native_size``)."""
    return native_size(pipe)


def pipeline_variant(pipe: Pipeline, scheduler: ComponentSpec | None, guidance: float | None) -> Pipeline:
    """``pipe`` with another scheduler and/or the scale of its first scaled ``[[guidance]]``
    replaced: a shallow copy sharing every module, whose spec records the change (for the lock).

    :raises ArgumentError: (``guidance``) when no guidance entry has a scale, or the new scale
        is not valid for it.
    """
    if scheduler is None and guidance is None:
        return pipe
    pipe.__dict__.setdefault("_weight_hashes", {})  # shared with the variant: weights are hashed once
    variant = copy.copy(pipe)
    variant.components = dict(pipe.components)
    updates: dict[str, Any] = {}
    if scheduler is not None:
        variant.components["scheduler"] = pipe.registry.build("scheduler", scheduler)
        updates["scheduler"] = scheduler
    if guidance is not None:
        scaled = [i for i, g in enumerate(pipe.guidance) if "scale" in type(g.spec).model_fields]
        if not scaled:
            raise ArgumentError("guidance", "this spec has no [[guidance]] with a scale to set")
        index = scaled[0]
        entry = pipe.guidance[index]
        try:
            spec = type(entry.spec).model_validate({**entry.spec.model_dump(), "scale": guidance})
        except ValidationError as exc:
            raise ArgumentError("guidance", "; ".join(validation_messages(exc))) from None
        variant.guidance = list(pipe.guidance)
        variant.guidance[index] = with_spec(pipe, entry, spec)
        updates["guidance"] = [g.spec for g in variant.guidance]
    variant.spec = pipe.spec.model_copy(update=updates)
    return variant


def with_spec(pipe: Pipeline, guidance: Any, spec: ComponentSpec) -> Any:
    """``guidance`` with a changed spec: rebuilt when it holds no weights; otherwise a shallow copy
    sharing its modules with ``spec`` in place (guidance reads its spec when it wraps a predictor),
    so a request never loads weights."""
    if not (isinstance(guidance, nn.Module) and any(True for _ in guidance.parameters())):
        return pipe.registry.build("guidance", spec)
    changed = copy.copy(guidance)
    changed.spec = spec
    return changed

