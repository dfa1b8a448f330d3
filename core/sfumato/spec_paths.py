"""Spec fields that name files or folders (``SpecPath``), and the walk that finds them.

A plugin declares such a field with ``sfumato.SpecPath``::

    weights: sfumato.SpecPath | None = Field(None, description="safetensors weights; None: random.")
    vocab_file: sfumato.SpecPath = Field(..., description="One token per line.")

Three parts of sfumato act on these fields, and on no others: a relative path in a spec file is
resolved against that file (``sfumato.specs``), an output image's lock records the SHA-256 of each
local file or folder (``sfumato.outputs``), and ``sfumato convert`` carries each one into its
output folder. A field of any other type keeps its value, whatever its name (a ``path`` that is a
key path, a ``root`` that is a URL prefix).

``local_spec_paths`` finds them by walking the pydantic fields of the spec's models over spec data:
nested models, lists, tuples and dicts of them, unions (a model member is walked only when its
``type`` literal is the table's ``type``), and tables of other components held as plain data: a
field marked ``ComponentTable(kind)`` (CLIP guidance's ``text_encoder``) or typed as the
``ComponentSpec`` base itself (a scheduler's ``sigmas`` table), whose Spec the registry names by
the table's ``type``. It works on spec data that has not been validated (one file of an
``extends`` chain, a lock read back), finding what it can.

A value starting with ``builtin:`` or containing ``://`` names no local file and is never changed.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from .component import ComponentSpec

#: Where a value lies in spec data: the keys leading to it (table names, field names, list indices).
Location = tuple[Any, ...]


@dataclass(frozen=True)
class SpecPathMarker:
    """Marks a ``str`` spec field as naming a file or folder (see ``SpecPath``)."""


#: A spec field naming a local file or folder, a ``builtin:`` name or a URL: relative paths are
#: resolved against the spec file that wrote them, outputs' locks hash the file, ``sfumato
#: convert`` carries it. Optional: ``SpecPath | None``; several: ``list[SpecPath]``.
SpecPath = Annotated[str, SpecPathMarker()]


@dataclass(frozen=True)
class ComponentTable:
    """Marks a spec field holding another component's table as plain data (``{type = "clip-text",
    weights = "..."}``), which the component builds itself with ``sfumato.build(kind, table)``; the
    ``SpecPath`` fields of the Spec its ``type`` names among the registered ``kind`` are found too.
    Declare it as ``Annotated[dict[str, Any] | None, sfumato.ComponentTable("encoder")]``."""

    kind: str


def is_local_path(value: Any) -> bool:
    """Whether a ``SpecPath`` value names a local file or folder: a non-empty string that is no
    ``builtin:name`` and no URL (``https://...``)."""
    return isinstance(value, str) and bool(value) and not value.startswith("builtin:") and "://" not in value


def local_spec_paths(model: type[BaseModel], data: Any, registry: Any) -> list[tuple[Location, str]]:
    """``(location, path)`` of every ``SpecPath`` value in ``data`` that names a local file or
    folder, in the order of the models' fields. ``model`` describes ``data`` (a pipeline spec's
    model, or one component's Spec); ``registry`` names the Specs of nested component tables."""
    found: dict[Location, str] = {}
    _walk_model(model, data, (), registry, found)
    return [(location, path) for location, path in found.items() if is_local_path(path)]


def set_at(data: Any, location: Location, value: Any) -> None:
    """Replace the value at ``location`` of spec data (a location ``local_spec_paths`` gave)."""
    for key in location[:-1]:
        data = data[key]
    data[location[-1]] = value


def field_name(location: Location) -> str:
    """A location as spec fields are named in ``--set`` and in locks: ``guidance.1.weights``."""
    return ".".join(str(key) for key in location)


def _walk_model(model: type[BaseModel], data: Any, where: Location, registry: Any,
                found: dict[Location, str]) -> None:
    if not isinstance(data, dict):
        return
    if model is ComponentSpec:  # a table of any registered type, named by its own ``type``
        for spec in _specs_named(registry, None, data.get("type")):
            _walk_model(spec, data, where, registry, found)
        return
    if not _type_matches(model, data):
        return
    for name, field in model.model_fields.items():
        if name in data:
            _walk_value(field.annotation, tuple(field.metadata), data[name], (*where, name), registry, found)


def _walk_value(annotation: Any, metadata: tuple[Any, ...], value: Any, where: Location, registry: Any,
                found: dict[Location, str]) -> None:
    if isinstance(value, str) and any(isinstance(m, SpecPathMarker) for m in metadata):
        found[where] = value
        return
    tables = [m for m in metadata if isinstance(m, ComponentTable)]
    if tables and isinstance(value, dict):
        for spec in _specs_named(registry, tables[0].kind, value.get("type")):
            _walk_model(spec, value, where, registry, found)
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        _walk_value(args[0], (*metadata, *annotation.__metadata__), value, where, registry, found)
    elif origin in (Union, types.UnionType):
        for member in args:
            _walk_value(member, metadata, value, where, registry, found)
    elif origin in (list, tuple, set, frozenset) and isinstance(value, list) and args:
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        for i, item in enumerate(value):
            if not fixed or i < len(args):
                _walk_value(args[i] if fixed else args[0], (), item, (*where, i), registry, found)
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            _walk_value(args[1], (), item, (*where, key), registry, found)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        _walk_model(annotation, value, where, registry, found)


def _type_matches(model: type[BaseModel], data: dict[str, Any]) -> bool:
    """Whether ``data`` is a table of ``model``: its ``type`` is the model's ``type`` literal (a
    model without one, such as ``RuntimeSpec`` or a nested config, fits any table)."""
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return True
    return data.get("type") in get_args(field.annotation)


def _specs_named(registry: Any, kind: str | None, name: Any) -> list[type[ComponentSpec]]:
    """The Spec of the registered type ``name`` of ``kind`` (of every kind, for None)."""
    if registry is None or not isinstance(name, str):
        return []
    kinds = [kind] if kind is not None else list(registry.components)
    return [registry.components[k][name].cls.Spec for k in kinds if name in registry.components.get(k, {})]
