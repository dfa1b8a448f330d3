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
from typing import Annotated, Any, Mapping, NamedTuple, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .component import Component, ComponentSpec
from .errors import SpecError
from .registry import get_registry
from .runtime import RuntimeSpec
from .spec_paths import local_spec_paths, set_at
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
    "diffusion": "formulation",
}
LIST_TABLES: dict[str, str] = {"guidance": "guidance", "adapters": "adapter", "speedups": "speedup"}
PLAIN_TABLES: dict[str, type[BaseModel]] = {"runtime": RuntimeSpec, "train": TrainSpec}
#: The ``type`` a component table has when it states none.
DEFAULT_TYPES: dict[str, str] = {"diffusion": "vp"}


def core_table_names() -> set[str]:
    """The top-level names of the core spec, which no plugin may declare."""
    return {*COMPONENT_TABLES, *LIST_TABLES, *PLAIN_TABLES, "extends"}


def component_tables(registry: Any = None) -> dict[str, str]:
    """The single component tables of a spec and their kinds: the core's (``COMPONENT_TABLES``),
    then those the plugins of ``registry`` declared (``register_spec_tables``)."""
    declared = getattr(registry, "spec_tables", {}).values()
    return {**COMPONENT_TABLES, **{t.table: t.kind for t in declared if not t.many}}


def list_tables(registry: Any = None) -> dict[str, str]:
    """The list tables (``[[table]]``) of a spec and their kinds: the core's (``LIST_TABLES``),
    then those the plugins of ``registry`` declared."""
    declared = getattr(registry, "spec_tables", {}).values()
    return {**LIST_TABLES, **{t.table: t.kind for t in declared if t.many}}


class PipelineSpecBase(BaseModel):
    """Base of the generated ``PipelineSpec`` model. ``source`` is the file it came from."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (every default written out)."""
        return self.model_dump(mode="json", exclude_none=True)


# -- reading files --------------------------------------------------------------------------

#: The most files an ``extends`` chain may hold, the first included: a deeper chain is a mistake
#: (generated, or looping through links) and would otherwise end in a RecursionError.
MAX_EXTENDS_DEPTH = 64


def read_spec_file(path: str | Path, registry: Any = None) -> dict[str, Any]:
    """Read a TOML or JSON spec and resolve its ``extends`` chain (each path relative to the file
    that names it).

    The extending file's tables are merged over the base's field by field (``merge``; a table that
    changes its ``type`` keeps the fields the new type shares, as the ``registry``, by default the
    process-wide one, says); lists (such as ``[[guidance]]``) replace the base's list whole.
    Relative paths in ``SpecPath`` fields are resolved against the file that wrote them.
    """
    path, extended_by = Path(path), None
    registry = registry or get_registry()
    chain: list[Path] = []
    layers: list[tuple[Path, dict[str, Any]]] = []  # (the file's folder, its data)
    while True:
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(str(p) for p in (*chain, resolved))
            raise SpecError(f"'extends' forms a cycle: {cycle}", source=str(extended_by))
        if len(chain) == MAX_EXTENDS_DEPTH:
            raise SpecError(f"'extends' chain longer than {MAX_EXTENDS_DEPTH} files (it starts at {chain[0]}); "
                            "a spec may extend at most that many: merge some of the bases", source=str(extended_by))
        data = parse_spec_file(path, extended_by)
        chain.append(resolved)
        layers.append((path.parent, data))
        base_name = data.pop("extends", None)
        if base_name is None:
            break
        if not isinstance(base_name, str):
            raise SpecError(f"'extends' must be a path string, got {base_name!r}", source=str(path))
        extended_by, path = path, path.parent / base_name
    typed = merge_chain([data for _, data in layers], registry)
    for folder, data in layers:
        resolve_relative_paths(data, folder, registry, typed)
    return merge_chain([data for _, data in layers], registry)


def merge_chain(layers: list[dict[str, Any]], registry: Any) -> dict[str, Any]:
    """The data of an ``extends`` chain, its files' data given from the extending one to the last
    base: each merged over the one it extends."""
    data = layers[-1]
    for layer in reversed(layers[:-1]):
        data = merge(data, layer, registry)
    return data


def parse_spec_file(path: Path, extended_by: Path | None = None) -> dict[str, Any]:
    """One spec file's own data, ``extends`` not followed and paths not resolved: TOML, or JSON
    for ``.json``. ``extended_by`` is the spec whose ``extends`` names it: errors about a file that
    cannot be read are that spec's."""
    reference = "" if extended_by is None else "'extends': "
    blame = str(extended_by) if extended_by is not None else None
    if path.is_dir():
        raise SpecError(f"{reference}{path} is a folder, not a spec file (.toml or .json)", source=blame)
    if not path.is_file():
        raise SpecError(f"{reference}spec file not found: {path}", source=blame)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(f"{reference}cannot read spec file {path}: {exc.strerror or exc}", source=blame) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}; save the "
                        "file as UTF-8", source=str(path)) from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML: {exc}", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"malformed JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})",
                        source=str(path)) from None
    except RecursionError:
        raise SpecError(f"malformed {'JSON' if is_json else 'TOML'}: values nested too deeply to read",
                        source=str(path)) from None
    if not isinstance(data, dict):
        raise SpecError(f"the top level of a JSON spec must be an object of tables ({{\"task\": ..., "
                        f"\"denoiser\": {{...}}}}), got {_json_kind(data)}", source=str(path))
    expand_shorthands(data, default_types=False)  # after merging: a base's type carries over
    return data


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def expand_shorthands(data: dict[str, Any], default_types: bool = True) -> None:
    """Spell out the shorthands of a spec (in place): ``task = "name"`` is short for
    ``[task] type = "name"``, and (``default_types``) a table of ``DEFAULT_TYPES`` without a
    ``type`` has its default (``[diffusion]`` is the variance-preserving formulation unless it says
    otherwise). One file of an ``extends`` chain gets no default types: a ``[diffusion]`` table
    that states none takes its base's."""
    if isinstance(data.get("task"), str):
        data["task"] = {"type": data["task"]}
    for table, default in DEFAULT_TYPES.items() if default_types else ():
        if isinstance(data.get(table), dict) and "type" not in data[table]:
            data[table] = {"type": default, **data[table]}


def resolve_relative_paths(
    data: dict[str, Any], folder: Path, registry: Any, typed: dict[str, Any] | None = None
) -> None:
    """Make the relative paths in ``SpecPath`` fields of one spec file's data absolute against
    ``folder``, the file's folder (in place); ``builtin:`` names, URLs and absolute paths stay.

    ``typed`` is the data of the file's whole ``extends`` chain, merged: a table this file writes
    without a ``type`` (``[denoiser] weights = ...`` over a base's denoiser) has the type it has
    there, which says which of its fields are paths.
    """
    view = data if typed is None else _with_types(data, typed)
    for location, path in local_spec_paths(pipeline_spec_model(registry), view, registry):
        if not Path(path).is_absolute():
            set_at(data, location, str((folder / path).resolve()))


def _with_types(data: Any, typed: Any) -> Any:
    """A copy of ``data`` in which each table that states no ``type`` has the one the table at the
    same place of ``typed`` states."""
    if isinstance(data, dict):
        out = {key: _with_types(value, typed.get(key) if isinstance(typed, dict) else None)
               for key, value in data.items()}
        if "type" not in out and isinstance(typed, dict) and "type" in typed:
            out["type"] = typed["type"]
        return out
    if isinstance(data, list):
        return [_with_types(item, typed[i] if isinstance(typed, list) and i < len(typed) else None)
                for i, item in enumerate(data)]
    return data


def merge(
    base: dict[str, Any], override: dict[str, Any], registry: Any = None, kinds: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, everything else replaces).

    A component table whose ``type`` changes keeps only the fields the new type shares with the
    old one (``retype``); ``kinds`` maps the tables of this level to their kind (default: the
    pipeline spec's component tables; a nested table that changes type is replaced whole).
    """
    top = kinds is None
    kinds = component_tables(registry) if top else kinds
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            old_type = old.get("type", DEFAULT_TYPES.get(key) if top else None)
            if old_type is not None and "type" in value and old_type != value["type"]:
                old = retype(old, value["type"], kinds.get(key), registry)
            out[key] = merge(old, value, registry, kinds={})
        else:
            out[key] = copy.deepcopy(value)
    return out


def retype(table: dict[str, Any], new_type: Any, kind: str | None, registry: Any = None) -> dict[str, Any]:
    """``table`` switched to ``new_type``: the fields that type also has keep their values
    (``steps``, ``height``, ``width``, ...), the others are dropped (they would not be valid for
    it). With an unknown kind or type it keeps none (validation then names the type)."""
    fields: set[str] = set()
    if kind is not None and isinstance(new_type, str):
        entry = (registry or get_registry()).components[kind].get(new_type)
        fields = set(entry.cls.Spec.model_fields) if entry is not None else set()
    kept = {key: copy.deepcopy(value) for key, value in table.items() if key in fields and key != "type"}
    return {"type": new_type, **kept}


# -- overrides ------------------------------------------------------------------------------


class Override(NamedTuple):
    """One override: ``label`` names it in errors (``--set scheduler.steps=30``), ``path`` is the
    keys it follows (``["scheduler", "steps"]``), ``value`` what it sets."""

    label: str
    path: list[str]
    value: Any


def parse_override(text: str) -> Override:
    """Parse ``table.field=value``; the value is read as TOML (``30``, ``true``, ``"x"``, ``[1, 2]``)
    and falls back to a plain string."""
    label = f"--set {text}"
    if not isinstance(text, str) or "=" not in text:
        raise SpecError("an override must look like table.field=value, such as scheduler.steps=30", source=label)
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw.strip()
    return _override(label, key, value)


def _override(label: str, key: str, value: Any) -> Override:
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        problem = "an empty key" if not key.strip() else f"an empty part in the key {key.strip()!r}"
        raise SpecError(f"{problem}; write table.field=value, such as scheduler.steps=30", source=label)
    return Override(label, path, value)


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> list[Override]:
    """``--set`` strings, or a ``{"table.field": value}`` dict, as ``Override`` values."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [_override(f"override {key!r}", str(key), value) for key, value in overrides.items()]
    return [parse_override(text) for text in overrides]


def apply_overrides(
    data: dict[str, Any], overrides: list[str] | dict[str, Any] | None, registry: Any = None
) -> dict[str, Any]:
    """Apply ``--set`` style overrides to spec data (``guidance.0.scale=3`` indexes a list).

    Setting a component table's ``type`` (or ``task`` to a name) to another type keeps the fields
    the new type shares with the old (``retype``). Errors name the override.
    """
    data = copy.deepcopy(data)
    expand_shorthands(data)
    for override in parse_overrides(overrides):
        _apply(data, override, registry)
    return data


def _apply(data: dict[str, Any], override: Override, registry: Any) -> None:
    label, path, value = override
    if path == ["task"] and isinstance(value, str):  # task = "name" shorthand
        path = ["task", "type"]
    node: Any = data
    for depth, part in enumerate(path):
        here, last = ".".join(path[:depth]), depth == len(path) - 1
        if isinstance(node, list):
            if not (part.isascii() and part.isdigit() and int(part) < len(node)):
                valid = f"0 to {len(node) - 1}" if node else "none: it is empty"
                raise SpecError(f"no item {part} in {here} (it has {len(node)}; valid indices: {valid})", source=label)
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif not isinstance(node, dict):
            raise SpecError(f"{here} is a value ({node!r}), not a table: it has no field {part!r}", source=label)
        elif not last:
            if part not in node and path[depth + 1].isdigit():
                raise SpecError(f"no item {path[depth + 1]} in {part}: the spec has no {part}", source=label)
            node = node.setdefault(part, {})
        elif part == "type" and "type" in node and node["type"] != value:
            kind = component_tables(registry).get(path[0]) if depth == 1 else (
                list_tables(registry).get(path[0]) if depth == 2 else None)
            retyped = retype(node, value, kind, registry)
            node.clear()
            node.update(retyped)
        else:
            node[part] = value


# -- validation -----------------------------------------------------------------------------

#: One problem in spec data: where (the keys leading to it, ``("guidance", 0, "scale")``) and
#: what (``"[[guidance]] #1 scale: Input should be a finite number (got nan)"``).
Problem = tuple[tuple[Any, ...], str]


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
        "train": (Optional[TrainSpec], None),
    }
    for table, kind in component_tables(registry).items():
        union = component_union(registry, kind)
        fields[table] = (Optional[union], None) if union is not None else (None, None)
    for table, kind in list_tables(registry).items():
        union = component_union(registry, kind)
        fields[table] = (list[union], Field(default_factory=list)) if union is not None else (list[None], Field(default_factory=list))
    model = create_model("PipelineSpec", __base__=PipelineSpecBase, **fields)
    registry._pipeline_model = model
    return model


def validate_spec(
    data: dict[str, Any], registry: Any, source: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> PipelineSpecBase:
    """Validate spec data into a ``PipelineSpec``; one ``SpecError`` lists every problem.

    ``overrides`` are those already applied to ``data``: a problem they caused names the override
    instead of ``source`` (see ``spec_error``).
    """
    if not isinstance(data, dict):
        raise SpecError(f"a spec is a table of tables, got {type(data).__name__}", source=source)
    data = copy.deepcopy(data)
    expand_shorthands(data)
    problems = _check_types(data, registry)
    try:
        spec = pipeline_spec_model(registry).model_validate(data)
    except ValidationError as exc:
        reported = {_table_of(loc, registry) for loc, _ in problems}
        problems += [p for p in validation_problems(exc, data, registry=registry)
                     if _table_of(p[0], registry) not in reported]
    if problems:
        raise spec_error(problems, source, parse_overrides(overrides))
    return spec


def spec_error(problems: list[Problem], source: str | None, overrides: list[Override]) -> SpecError:
    """One error for ``problems``. A problem that an override caused names it: the error is the
    override's when every problem is, else ``source``'s with ``(from --set ...)`` on those lines."""
    causes = [_caused_by(loc, overrides) for loc, _ in problems]
    if all(causes):
        return SpecError([text for _, text in problems], source=", ".join(dict.fromkeys(c.label for c in causes)))
    lines = [f"{text} (from {cause.label})" if cause else text for (_, text), cause in zip(problems, causes)]
    return SpecError(lines, source=source)


def _caused_by(loc: tuple[Any, ...], overrides: list[Override]) -> Override | None:
    """The last override that set ``loc``, a table above it or a field below it; setting a table's
    ``type`` concerns the whole table."""
    where = [str(part) for part in loc]
    for override in reversed(overrides):
        path = override.path[:-1] if override.path[-1] == "type" else override.path
        common = min(len(path), len(where))
        if path[:common] == where[:common]:
            return override
    return None


def _table_of(loc: tuple[Any, ...], registry: Any = None) -> tuple[Any, ...]:
    """The table part of a problem's location: ``("scheduler",)`` or ``("guidance", 0)``."""
    if len(loc) > 1 and loc[0] in list_tables(registry) and isinstance(loc[1], int):
        return loc[:2]
    return loc[:1]


def validate_component(cls: type[Component], data: dict[str, Any], where: str) -> ComponentSpec:
    """Validate one component table against ``cls.Spec`` with spec-style error messages."""
    try:
        return cls.Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"{where} {text}" for _, text in validation_problems(exc, data, top=False)]) from None


def _check_types(data: dict[str, Any], registry: Any) -> list[Problem]:
    """Unknown tables and unknown or missing ``type`` values, with the valid choices."""
    problems: list[Problem] = []
    singles, lists = component_tables(registry), list_tables(registry)
    known = set(singles) | set(lists) | set(PLAIN_TABLES)
    for key in data:
        if key not in known:
            problems.append(((key,), f"unknown table [{key}]; valid tables: {', '.join(sorted(known))}"))
    tables = [((t,), f"[{t}]", data.get(t), k) for t, k in singles.items()]
    for table, kind in lists.items():
        items = data.get(table, [])
        if not isinstance(items, list):
            problems.append(((table,), f"[[{table}]] must be a list of tables (write [[{table}]] in TOML)"))
            continue
        tables += [((table, i), f"[[{table}]] #{i + 1}", item, kind) for i, item in enumerate(items)]
    for loc, where, table, kind in tables:
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append((loc, f"{where} must be a table, got {type(table).__name__}"))
            continue
        type_name = table.get("type")
        if type_name is None:
            choices = ", ".join(repr(t) for t in registry.types(kind)) or "none registered"
            problems.append(((*loc, "type"), f"{where} type: missing; valid choices: {choices}"))
        elif not isinstance(type_name, str) or type_name not in registry.components[kind]:
            problems.append(((*loc, "type"), f"{where} type: {registry.unknown_type_message(kind, str(type_name))}"))
    return problems


def validation_problems(exc: ValidationError, data: dict[str, Any], top: bool = True,
                        registry: Any = None) -> list[Problem]:
    """One problem per pydantic error, worded ``[table] field: message (got value)``.

    Pydantic names the member of a union in an error's location (the ``type`` of a component
    table, ``str`` or ``CLIPConfig`` for ``architecture``); those names are dropped. When a value
    fits one member's shape (a table for ``CLIPConfig``), only that member's errors are kept; when
    it fits none, the members' errors become one line.
    """
    errors = []  # (location, the union's location or None, whether a union member ends the location, error)
    for error in exc.errors():
        node: Any = data
        cleaned: list[Any] = []
        union, member_last = None, False
        for i, part in enumerate(error["loc"]):
            if _is_union_member(node, part, last=i == len(error["loc"]) - 1, error_type=error["type"]):
                union, member_last = tuple(cleaned), i == len(error["loc"]) - 1
                continue
            cleaned.append(part)
            node = node.get(part) if isinstance(node, dict) else (
                node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
            )
        errors.append((tuple(cleaned), union, member_last, error))
    fitting = {union for _, union, member_last, _ in errors if union is not None and not member_last}
    problems: list[Problem] = []
    unfit: dict[tuple[Any, ...], list[Any]] = {}  # location -> errors of union members the value fits none of
    for loc, union, member_last, error in errors:
        if member_last:
            if union not in fitting:  # else a member whose shape the value does not have (a table is no string)
                unfit.setdefault(loc, []).append(error)
            continue
        problems.append((loc, _located(loc, _message(error), data, top, registry)))
    for loc, members in unfit.items():
        joined = {**members[0], "msg": "; or ".join(member["msg"] for member in members)}
        problems.append((loc, _located(loc, _message(joined), data, top, registry)))
    return problems


def _is_union_member(node: Any, part: Any, last: bool, error_type: str) -> bool:
    """Whether ``part`` of an error location names a union member rather than a key of ``node``."""
    if not isinstance(part, str) or node is None:
        return False
    if not isinstance(node, dict):
        return True  # a value or a list has no named fields
    if part in node:
        return False
    return not last or error_type not in ("missing", "extra_forbidden")


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] == "value_error":  # a validator's own message, which names the values
        return str(error["ctx"]["error"])
    if "input" in error and not isinstance(error["input"], dict):
        return f"{error['msg']} (got {error['input']!r})"
    return error["msg"]


def _located(loc: tuple[Any, ...], message: str, data: dict[str, Any], top: bool, registry: Any = None) -> str:
    """``message`` prefixed with where it applies: ``[table] field`` (``[[guidance]] #1 field``)."""
    rest, where = list(loc), ""
    if top and rest:
        head = rest.pop(0)
        if head in list_tables(registry) and rest and isinstance(rest[0], int):
            where = f"[[{head}]] #{rest.pop(0) + 1}"
        else:
            known = head in data or head in component_tables(registry) or head in PLAIN_TABLES
            where = f"[{head}]" if known else str(head)
    field = ".".join(str(p) for p in rest)
    return f"{where} {field}: {message}".strip() if field else f"{where}: {message}"


def load_spec(
    spec: str | Path | dict[str, Any],
    registry: Any,
    overrides: list[str] | dict[str, Any] | None = None,
) -> PipelineSpecBase:
    """Read (when a path), apply overrides and validate a pipeline spec."""
    source = None
    if isinstance(spec, (str, Path)):
        source = str(spec)
        data = read_spec_file(spec, registry)
    else:
        data = copy.deepcopy(spec)
        data.pop("extends", None)
    data = apply_overrides(data, overrides, registry)
    return validate_spec(data, registry, source=source, overrides=overrides)


def spec_json_schema(registry: Any) -> dict[str, Any]:
    """JSON Schema of pipeline spec files for the loaded plugins (editor completion, CI checks).

    It also admits the ``task = "name"`` shorthand for a task table that has only a type, and a
    ``[diffusion]`` table without a ``type`` (the variance-preserving formulation).
    """
    schema = pipeline_spec_model(registry).model_json_schema()
    schema["title"] = "sfumato pipeline spec"
    schema["properties"]["extends"] = {"type": "string", "description": "A spec file this one changes."}
    tasks = registry.types("task")
    if tasks:
        schema["properties"]["task"].setdefault("anyOf", []).insert(0, {"type": "string", "enum": tasks})
    return schema
