"""Pipeline spec files: reading (TOML or JSON), ``extends``, ``--set`` overrides, validation.

After plugins load, ``pipeline_spec_model(registry)`` builds a pydantic model whose component
tables are discriminated unions (on ``type``) of every registered class's ``Spec``, so plugin
fields are validated, kept on a round trip, and appear in the JSON Schema.

Every error names the file, the table path and the field, and lists the valid choices for an
unknown ``type``.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .component import Component, ComponentSpec
from .errors import SpecError
from .noise_schedule import DiffusionSpec
from .runtime import RuntimeSpec
from .training.spec import TrainSpec

#: Component tables of a pipeline spec and the kind each one holds.
COMPONENT_TABLES: dict[str, str] = {
    "task": "task",
    "text_encoder": "encoder",
    "image_encoder": "encoder",
    "autoencoder": "autoencoder",
    "denoiser": "denoiser",
    "scheduler": "scheduler",
    "classifier": "classifier",
    "dataset": "dataset",
}
LIST_TABLES: dict[str, str] = {"guidance": "guidance"}
PLAIN_TABLES: dict[str, type[BaseModel]] = {"runtime": RuntimeSpec, "diffusion": DiffusionSpec, "train": TrainSpec}


class PipelineSpecBase(BaseModel):
    """Base of the generated ``PipelineSpec`` model. ``source`` is the file it came from."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (every default written out)."""
        return self.model_dump(mode="json", exclude_none=True)


# -- reading files --------------------------------------------------------------------------


def read_spec_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a TOML or JSON spec and resolve ``extends`` (a path relative to the file).

    The extending file's tables are merged over the base's field by field; lists (such as
    ``[[guidance]]``) replace the base's list whole. Relative ``weights`` paths stay relative to
    the file that wrote them.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise SpecError(f"'extends' forms a cycle: {chain}", source=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML: {exc}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise SpecError(f"malformed JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})",
                        source=str(path)) from exc
    resolve_relative_paths(data, path.parent)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise SpecError("'extends' must be a path string", source=str(path))
    base = read_spec_file(path.parent / base_name, (*_seen, resolved))
    return merge(base, data)


def resolve_relative_paths(data: dict[str, Any], base_dir: Path) -> None:
    """Make ``weights`` and ``path``-like fields of component tables relative to the spec file.

    A value starting with ``builtin:`` or containing ``://`` is left alone; so is an absolute path.
    """

    def fix(table: Any) -> None:
        if not isinstance(table, dict):
            return
        for key, value in table.items():
            if key in ("weights", "path", "root", "tokenizer") and isinstance(value, str) and value:
                if ":" in value.split("/")[0] or Path(value).is_absolute():
                    continue
                table[key] = str((base_dir / value).resolve())
            elif isinstance(value, dict):
                fix(value)

    for key, value in data.items():
        if isinstance(value, dict):
            fix(value)
        elif isinstance(value, list):
            for item in value:
                fix(item)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, everything else replaces).

    A table whose ``type`` changes replaces the base table whole: fields of the old type would
    not be valid for the new one.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("type", value.get("type")) == value.get("type", old.get("type")):
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- overrides ------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``table.field=value``; the value is read as TOML (``30``, ``true``, ``"x"``, ``[1, 2]``)
    and falls back to a plain string."""
    if "=" not in text:
        raise SpecError(f"override {text!r} must look like table.field=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise SpecError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Apply ``--set`` style overrides to spec data (``guidance.0.scale=3`` indexes a list).

    Setting ``table.type`` to another type replaces the table's fields of the old type.
    """
    data = copy.deepcopy(data)
    if not overrides:
        return data
    items = (
        [(key.split("."), value) for key, value in overrides.items()]
        if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    )
    for path, value in items:
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(f"override {'.'.join(path)}: no item {part} in "
                                    f"{'.'.join(path[:depth])} (it has {len(node)})")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
                if isinstance(node, str) and depth == 0:  # task = "name" shorthand
                    node = data[part] = {"type": node}
        last = path[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif last == "type" and isinstance(node, dict) and node.get("type") != value:
            node.clear()
            node["type"] = value
        else:
            node[last] = value
    return data


# -- validation -----------------------------------------------------------------------------


def component_union(registry: Any, kind: str) -> Any:
    """``Annotated[Union[Spec, ...], discriminator="type"]`` over the registered types of ``kind``."""
    specs = [registry.components[kind][name].cls.Spec for name in registry.types(kind)]
    if not specs:
        return None
    if len(specs) == 1:
        return specs[0]
    return Annotated[Union[tuple(specs)], Field(discriminator="type")]


def pipeline_spec_model(registry: Any) -> type[PipelineSpecBase]:
    """The ``PipelineSpec`` model for the plugins loaded in ``registry`` (cached on it)."""
    if registry._pipeline_model is not None:
        return registry._pipeline_model
    fields: dict[str, Any] = {
        "runtime": (RuntimeSpec, Field(default_factory=RuntimeSpec)),
        "diffusion": (Optional[DiffusionSpec], None),
        "train": (Optional[TrainSpec], None),
    }
    for table, kind in COMPONENT_TABLES.items():
        union = component_union(registry, kind)
        fields[table] = (Optional[union], None) if union is not None else (None, None)
    for table, kind in LIST_TABLES.items():
        union = component_union(registry, kind)
        fields[table] = (list[union], Field(default_factory=list)) if union is not None else (list[None], Field(default_factory=list))
    model = create_model("PipelineSpec", __base__=PipelineSpecBase, **fields)
    registry._pipeline_model = model
    return model


def validate_spec(data: dict[str, Any], registry: Any, source: str | None = None) -> PipelineSpecBase:
    """Validate spec data into a ``PipelineSpec``; one ``SpecError`` lists every problem."""
    data = copy.deepcopy(data)
    if isinstance(data.get("task"), str):
        data["task"] = {"type": data["task"]}
    problems = _check_types(data, registry)
    if problems:
        raise SpecError(problems, source=source)
    try:
        return pipeline_spec_model(registry).model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, data), source=source) from None


def validate_component(cls: type[Component], data: dict[str, Any], where: str) -> ComponentSpec:
    """Validate one component table against ``cls.Spec`` with spec-style error messages."""
    try:
        return cls.Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"{where} {p}" for p in format_validation_error(exc, data, top=False)]) from None


def _check_types(data: dict[str, Any], registry: Any) -> list[str]:
    """Unknown tables and unknown or missing ``type`` values, with the valid choices."""
    problems = []
    known = set(COMPONENT_TABLES) | set(LIST_TABLES) | set(PLAIN_TABLES)
    for key in data:
        if key not in known:
            problems.append(f"unknown table [{key}]; valid tables: {', '.join(sorted(known))}")
    tables = [(f"[{t}]", data.get(t), k) for t, k in COMPONENT_TABLES.items()]
    for table, kind in LIST_TABLES.items():
        items = data.get(table, [])
        if not isinstance(items, list):
            problems.append(f"[[{table}]] must be a list of tables (write [[{table}]] in TOML)")
            continue
        tables += [(f"[[{table}]] #{i + 1}", item, kind) for i, item in enumerate(items)]
    for where, table, kind in tables:
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(f"{where} must be a table, got {type(table).__name__}")
        elif "type" not in table:
            problems.append(f"{where} type: missing; valid choices: {', '.join(repr(t) for t in registry.types(kind)) or 'none registered'}")
        elif table["type"] not in registry.components[kind]:
            problems.append(f"{where} type: {registry.unknown_type_message(kind, str(table['type']))}")
    return problems


def format_validation_error(exc: ValidationError, data: dict[str, Any], top: bool = True) -> list[str]:
    """One line per pydantic error: ``[table] field: message (got value)``."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where, node = [], data
        # Drop the union tag pydantic inserts after a component table (it equals the table's type).
        cleaned: list[Any] = []
        for part in loc:
            if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("type") == part:
                continue
            cleaned.append(part)
            node = node.get(part) if isinstance(node, dict) else (
                node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
            )
        if top and cleaned:
            head = cleaned.pop(0)
            if head in LIST_TABLES and cleaned and isinstance(cleaned[0], int):
                where.append(f"[[{head}]] #{cleaned.pop(0) + 1}")
            else:
                where.append(f"[{head}]" if head in data or head in COMPONENT_TABLES or head in PLAIN_TABLES else str(head))
        field = ".".join(str(p) for p in cleaned)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif "input" in error and error["type"] not in ("missing",):
            message += f" (got {error['input']!r})"
        prefix = " ".join(where)
        lines.append(f"{prefix} {field}: {message}".strip() if field else f"{prefix}: {message}")
    return lines


def load_spec(
    spec: str | Path | dict[str, Any],
    registry: Any,
    overrides: list[str] | dict[str, Any] | None = None,
) -> PipelineSpecBase:
    """Read (when a path), apply overrides and validate a pipeline spec."""
    source = None
    if isinstance(spec, (str, Path)):
        source = str(spec)
        data = read_spec_file(spec)
    else:
        data = copy.deepcopy(spec)
        data.pop("extends", None)
    try:
        data = apply_overrides(data, overrides)
    except SpecError as exc:
        raise SpecError(exc.problems, source=source) from None
    return validate_spec(data, registry, source=source)


def spec_json_schema(registry: Any) -> dict[str, Any]:
    """JSON Schema of pipeline spec files for the loaded plugins (editor completion, CI checks).

    It also admits the ``task = "name"`` shorthand for a task table that has only a type.
    """
    schema = pipeline_spec_model(registry).model_json_schema()
    schema["title"] = "sfumato pipeline spec"
    schema["properties"]["extends"] = {"type": "string", "description": "A spec file this one changes."}
    tasks = registry.types("task")
    if tasks:
        schema["properties"]["task"].setdefault("anyOf", []).insert(0, {"type": "string", "enum": tasks})
    return schema
