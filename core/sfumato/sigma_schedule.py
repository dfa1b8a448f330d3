"""Sigma schedules: which noise levels a run visits, as a component kind of its own (``sigmas``).

A sampler decides how to move between noise levels; a sigma schedule decides which levels. The two
are separate, as ComfyUI separates its sampler and scheduler and k-diffusion passes ``sigmas`` to
every sampler, so every sigma-space sampler runs on every schedule (``euler`` on ``karras``,
``dpmpp-2m`` on ``beta``, ...). A spec selects one in its scheduler table::

    [scheduler]
    type = "dpmpp-2m"
    sigmas = "karras"                                   # a registered name
    # sigmas = { type = "beta", alpha = 0.6, beta = 0.6 }  # or a table with its fields
    # sigmas = "default"                                # the sampler's own timestep spacing

A schedule sees the model only through the ``NoiseLevels`` protocol (its sigma range, its table of
discrete levels and the sigma <-> timestep conversions), which every formulation provides, so a
schedule works on any model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, Protocol, Union

from pydantic import ValidationError
from pydantic_core import core_schema
from torch import Tensor

from .component import Component, ComponentSpec
from .errors import SpecError
from .kind_field import all_defaults

#: The ``sigmas`` value that keeps the sampler's own spacing (its ``spacing`` field).
DEFAULT_SIGMAS = "default"


class NoiseLevels(Protocol):
    """What a sigma schedule may know of the model: the members every formulation provides.

    ``NoiseSchedule`` (variance-preserving models) has them; so do other formulations. A schedule
    that used anything else would work on some models only.
    """

    #: The smallest and largest noise level the model was trained on.
    sigma_min: float
    sigma_max: float
    #: ``[T]`` the noise level of each training timestep, ascending.
    sigmas: Tensor

    @property
    def num_timesteps(self) -> int:
        """The number of training timesteps ``T``."""

    def sigma_at(self, t: Tensor) -> Tensor:
        """The noise level at (possibly fractional) training timesteps ``t``."""

    def timestep_at(self, sigma: Tensor) -> Tensor:
        """The (fractional) training timestep of each noise level in ``sigma``."""


class SigmaSchedule(Component, ABC):
    """Chooses the noise levels of a run: ``sigmas(formulation, steps)`` ``[steps]``, decreasing.

    The levels are float32 and strictly decreasing, without the final 0 (samplers append the level
    a run ends at). A schedule that cannot give ``steps`` distinct levels (more steps than the
    model's training timesteps, for one that picks among them) raises ``spec_error``.
    """

    kind: ClassVar[str] = "sigmas"

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def sigmas(self, formulation: NoiseLevels, steps: int) -> Tensor:
        """``[steps]`` decreasing noise levels for ``formulation``'s model (float32, no trailing 0)."""

    def spec_error(self, problem: str) -> SpecError:
        """A ``SpecError`` about this schedule, located where specs select it."""
        return SpecError(f"[scheduler] sigmas = {self.type_name()!r}: {problem}")


# -- the spec field -------------------------------------------------------------------------


def validate_sigma_schedule(value: Any) -> str | ComponentSpec:
    """A ``sigmas`` value checked against the registered schedules of the process-wide registry.

    Accepts ``"default"``, a registered name, a table ``{"type": name, ...}`` or a schedule's
    ``Spec``. Returns ``"default"``, the bare name when every field of the schedule keeps its
    default (so ``{type = "karras"}`` and ``"karras"`` are the same value and locks stay short),
    or else the validated ``Spec``. Raises ``ValueError`` (pydantic reports it at the field).
    """
    if isinstance(value, ComponentSpec):
        value = value.model_dump()
    if isinstance(value, str):
        if value == DEFAULT_SIGMAS:
            return DEFAULT_SIGMAS
        table: dict[str, Any] = {"type": value}
    elif isinstance(value, dict):
        table = value
    else:
        raise ValueError(
            f"a sigma schedule is 'default', a name such as 'karras', or a table such as "
            f"{{ type = \"beta\", alpha = 0.6 }}; got {value!r}"
        )
    from .registry import get_registry

    registry = get_registry()
    name = table.get("type")
    entry = registry.components[SigmaSchedule.kind].get(name) if isinstance(name, str) else None
    if entry is None:
        types = registry.types(SigmaSchedule.kind)
        if name is None:
            listed = ", ".join(repr(choice) for choice in types)
            raise ValueError(
                f"a sigma schedule table needs a type, such as {{ type = \"beta\" }}; valid types: {listed}"
            )
        if name == DEFAULT_SIGMAS:
            raise ValueError("'default' is no schedule with fields: write sigmas = \"default\", not a table")
        raise ValueError(registry.unknown_type_message(SigmaSchedule.kind, str(name), (DEFAULT_SIGMAS,),
                                                       what="sigma schedule"))
    try:
        spec = entry.cls.Spec.model_validate(table)
    except ValidationError as exc:
        from .specs import validation_problems

        problems = "; ".join(text for _, text in validation_problems(exc, table, top=False))
        raise ValueError(f"sigma schedule {name!r}: {problems}") from None
    return name if all_defaults(spec) else spec


def _serialize(value: str | ComponentSpec) -> str | dict[str, Any]:
    return value if isinstance(value, str) else value.model_dump(mode="json")


class _SigmaScheduleSchema:
    """Pydantic hooks of ``SigmaScheduleField``: validation and serialisation as described in
    ``validate_sigma_schedule``; a JSON Schema listing the names and every schedule's table."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            validate_sigma_schedule, serialization=core_schema.plain_serializer_function_ser_schema(_serialize)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        from .registry import get_registry

        registry = get_registry()
        names = registry.types(SigmaSchedule.kind)
        tables = []
        for name in names:
            table = handler(registry.components[SigmaSchedule.kind][name].cls.Spec.__pydantic_core_schema__)
            resolved = handler.resolve_ref_schema(table)
            resolved["title"] = f"sigma schedule {name!r}"
            resolved["required"] = ["type", *[field for field in resolved.get("required", []) if field != "type"]]
            tables.append(table)
        return {"anyOf": [{"type": "string", "enum": [DEFAULT_SIGMAS, *names]}, *tables]}


#: The type of a scheduler's ``sigmas`` field: ``"default"``, a registered schedule name, or a
#: table ``{type = name, field = value, ...}`` (see ``validate_sigma_schedule``). Declare it as
#: ``sigmas: sfumato.SigmaScheduleField = Field("default", description=...)`` and build the
#: schedule with ``sfumato.build_sigma_schedule(self.spec.sigmas)``.
SigmaScheduleField = Annotated[Union[str, ComponentSpec], _SigmaScheduleSchema]


def build_sigma_schedule(choice: str | ComponentSpec | dict[str, Any]) -> SigmaSchedule | None:
    """The schedule a ``sigmas`` field selects, built through the process-wide registry; None for
    ``"default"`` (the sampler keeps its own spacing). Takes any value the field accepts."""
    try:
        choice = validate_sigma_schedule(choice)
    except ValueError as exc:
        raise SpecError(f"[scheduler] sigmas: {exc}") from None
    if choice == DEFAULT_SIGMAS:
        return None
    from .registry import get_registry

    return get_registry().build(SigmaSchedule.kind, {"type": choice} if isinstance(choice, str) else choice)
