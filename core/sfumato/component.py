"""The base of every pluggable component: a kind, a pydantic ``Spec`` and ``from_spec``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict

#: How every spec table validates: unknown fields are errors; numbers, booleans and strings are
#: strict (``steps = true`` or ``steps = 20.0`` is an error, not 1 or 20 steps; an int is still a
#: valid float); floats must be finite (``scale = nan`` is an error; a field where ``inf`` means
#: something declares ``Field(..., allow_inf_nan=True)``). In strict mode a tuple field refuses the
#: list a TOML array arrives as: declare it with ``Field(..., strict=False)`` (its items stay strict).
SPEC_TABLE_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ComponentSpec(BaseModel):
    """Base of every component's configuration.

    Subclasses declare ``type: Literal["name"] = "name"``: the registered type name that selects
    the component in a spec file. Validation follows ``SPEC_TABLE_CONFIG``: a typo or a value of
    the wrong type in a spec never passes silently.
    """

    model_config = ConfigDict(SPEC_TABLE_CONFIG, frozen=False, protected_namespaces=())

    type: str


class Component:
    """Mixin giving a component class its kind, its Spec and a ``from_spec`` constructor.

    Each interface (``Encoder``, ``Scheduler``, ...) sets ``kind``; each concrete class sets
    ``Spec``. ``from_spec`` keeps the validated spec on the instance as ``self.spec`` so the
    resolved configuration can be written next to weights and into image metadata.
    """

    kind: ClassVar[str] = ""
    Spec: ClassVar[type[ComponentSpec]]

    spec: ComponentSpec

    @classmethod
    def type_name(cls) -> str:
        """The ``type`` a spec file uses to select this class (read from ``Spec.type``)."""
        return spec_type_name(cls.Spec)

    @classmethod
    def from_spec(cls, spec: ComponentSpec | dict[str, Any], **context: Any):
        """Build the component from its spec (a ``Spec`` instance or a plain dict).

        Components that need more than their own spec (a scheduler needs nothing else, a guidance
        method may need the pipeline's encoders) receive it through ``context``. The default
        passes the spec to ``__init__``.
        """
        if isinstance(spec, dict):
            spec = cls.Spec.model_validate({"type": cls.type_name(), **spec})
        obj = cls(spec, **context)
        obj.spec = spec
        return obj


def spec_type_name(spec_cls: type[ComponentSpec]) -> str:
    """Read the single literal of a Spec's ``type`` field; raise TypeError when it has none."""
    field = spec_cls.model_fields.get("type")
    annotation = field.annotation if field is not None else None
    if get_origin(annotation) is not Literal or len(get_args(annotation)) != 1:
        raise TypeError(
            f"{spec_cls.__qualname__}.type must be declared as type: Literal['<name>'] = '<name>', "
            f"got {annotation!r}"
        )
    return get_args(annotation)[0]
