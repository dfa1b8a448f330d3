"""A spec field that selects a component of a kind by name or by table, validated on its own.

Some components are parts of another: a guidance table's ``combiner`` (``sfumato.combiner``) is a
component of kind ``combiner`` chosen inside a ``[[guidance]]`` table, as a scheduler's ``sigmas``
chooses a sigma schedule. Such a field accepts a registered name (``"apg"``) or a table with the
component's fields (``{ type = "apg", momentum = -0.5 }``), is validated against the registered
types when the spec is (so a typo is a spec error at the field, with the valid choices), and
serialises back to the bare name when every field keeps its default (locks stay short)::

    combiner: Annotated[Union[str, ComponentSpec], sfumato.ComponentChoice("combiner")] = Field("cfg")

The owner builds the chosen component with ``choice.build(value)``, through the process-wide
registry.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import core_schema

from .component import Component, ComponentSpec


def all_defaults(spec: ComponentSpec) -> bool:
    """Whether every field of ``spec`` holds its default (then its bare name says it all)."""
    return all(
        not field.is_required() and getattr(spec, name) == field.get_default(call_default_factory=True)
        for name, field in type(spec).model_fields.items()
    )


class ComponentChoice:
    """Pydantic metadata of a field holding a component of ``kind``: a name or a table.

    :param kind: the component kind (``"combiner"``).
    :param what: how messages name it (default: the kind).
    :param example: a table shown when the value has the wrong shape.
    """

    def __init__(self, kind: str, what: str | None = None, example: str = '{ type = "name", field = 1.0 }'):
        self.kind, self.what, self.example = kind, what or kind, example

    def validate(self, value: Any) -> str | ComponentSpec:
        """The checked value: the bare name when every field keeps its default, else the ``Spec``.
        Raises ``ValueError`` (pydantic reports it at the field) naming the valid choices."""
        if isinstance(value, ComponentSpec):
            value = value.model_dump()
        if isinstance(value, str):
            table: dict[str, Any] = {"type": value}
        elif isinstance(value, dict):
            table = value
        else:
            raise ValueError(f"a {self.what} is a name or a table such as {self.example}; got {value!r}")
        from .registry import get_registry

        registry = get_registry()
        name = table.get("type")
        entry = registry.components[self.kind].get(name) if isinstance(name, str) else None
        if entry is None:
            if name is None:
                listed = ", ".join(repr(choice) for choice in registry.types(self.kind))
                raise ValueError(f"a {self.what} table needs a type; valid types: {listed}")
            raise ValueError(registry.unknown_type_message(self.kind, str(name), what=self.what))
        try:
            spec = entry.cls.Spec.model_validate(table)
        except ValidationError as exc:
            from .specs import validation_problems

            problems = "; ".join(text for _, text in validation_problems(exc, table, top=False))
            raise ValueError(f"{self.what} {name!r}: {problems}") from None
        return name if all_defaults(spec) else spec

    def build(self, value: str | ComponentSpec | dict[str, Any]) -> Component:
        """The component ``value`` selects, built through the process-wide registry."""
        from .registry import get_registry

        choice = self.validate(value)
        return get_registry().build(self.kind, {"type": choice} if isinstance(choice, str) else choice)

    @staticmethod
    def _serialize(value: str | ComponentSpec) -> str | dict[str, Any]:
        return value if isinstance(value, str) else value.model_dump(mode="json")

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate, serialization=core_schema.plain_serializer_function_ser_schema(self._serialize)
        )

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        """The names, or any registered type's table (for editor completion)."""
        from .registry import get_registry

        registry = get_registry()
        names = registry.types(self.kind)
        tables = []
        for name in names:
            table = handler(registry.components[self.kind][name].cls.Spec.__pydantic_core_schema__)
            resolved = handler.resolve_ref_schema(table)
            resolved["title"] = f"{self.what} {name!r}"
            resolved["required"] = ["type", *[field for field in resolved.get("required", []) if field != "type"]]
            tables.append(table)
        return {"anyOf": [{"type": "string", "enum": names}, *tables]}
