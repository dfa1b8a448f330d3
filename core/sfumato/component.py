"""The base of every pluggable component: a kind, a pydantic ``Spec`` and ``from_spec``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict


class ComponentSpec(BaseModel):
    """Base of every component's configuration.

    Subclasses declare ``type: Literal["name"] = "name"``: the registered type name that selects
    the component in a spec file. Unknown fields are errors (``extra="forbid"``), so a typo in a
    spec never passes silently.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())

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
