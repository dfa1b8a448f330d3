"""Replay: rebuild the run recorded in an image's lock (``sfumato generate --from IMAGE``).

A lock is untrusted input: an image can come from anywhere. Replay accepts a lock only when it has
the shape ``generate`` writes (the top-level keys, the fixed set of argument keys with their
types and ranges, weights hashes keyed by spec fields), its task is not a training task, and every
weights file it names still has the recorded SHA-256. It then repeats the recorded call of the
generation flow, ``sfumato.generate``, never a task's own ``run``: nothing but sampling runs, and
nothing is written but the caller's output. ``[train]`` and ``[dataset]`` tables play no part in
generation and are dropped.

Hashed paths in the lock's spec that are relative were written relative to the image's folder
(see ``sfumato.outputs``) and are resolved against it; they are found by the lock's own field
names, so checking a lock needs no plugin to say which fields are files. ``--set`` overrides
apply to the lock's spec (redirect moved weights with ``--set denoiser.weights=PATH``); a weights
file they redirect is still hashed, and a difference is reported as a note instead of an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import SpecError
from .generation import ArgumentError, check_arguments
from .outputs import TRAINING_TABLES, path_sha256, read_lock, rebase_paths, recorded_paths
from .pipeline import Pipeline
from .registry import Registry, get_registry
from .specs import apply_overrides, parse_override, validate_spec
from .training import TrainingTask


def _text(value: Any, none: bool = False) -> bool:
    return isinstance(value, str) or (none and value is None)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_or_list(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v) or (isinstance(v, list) and len(v) > 0 and all(check(i) for i in v))


#: The arguments a lock holds (exactly those ``generate`` records), with what each may be.
ARGUMENTS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "prompt": ("a string, a list of strings or null", _one_or_list(_text)),
    "negative_prompt": ("a string, a list of strings or null", _one_or_list(lambda v: _text(v, none=True))),
    "labels": ("an integer, a list of integers or null", _one_or_list(_whole)),
    "steps": ("an integer or null", lambda v: v is None or _whole(v)),
    "seed": ("an integer", _whole),
    "num_images": ("an integer", _whole),
    "height": ("an integer", _whole),
    "width": ("an integer", _whole),
    "strength": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "latents": ("true or false", lambda v: isinstance(v, bool)),
    "image": ("true or false", lambda v: isinstance(v, bool)),
    "mask": ("true or false", lambda v: isinstance(v, bool)),
}
#: Top-level keys of a lock; the first three are required.
LOCK_KEYS = ("spec", "arguments", "weights", "sfumato", "plugins")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+")


@dataclass
class Recorded:
    """A checked lock. :param spec: its spec data, paths resolved against the image's folder,
    without ``[train]``/``[dataset]``. :param arguments: ``generate``'s keyword arguments (the
    ``latents``/``image``/``mask`` flags removed). :param weights: SHA-256 by spec field."""

    spec: dict[str, Any]
    arguments: dict[str, Any]
    weights: dict[str, str] = field(default_factory=dict)


def read_recorded(image: str | Path) -> Recorded:
    """Read and check the lock of ``image``; a malformed one is a ``SpecError`` naming the problem."""
    lock = read_lock(image)
    where = f"{image}: malformed lock"
    if not isinstance(lock, dict):
        raise SpecError(f"{where}: expected a JSON object, found {type(lock).__name__}")
    problem = keys_problem(lock, LOCK_KEYS, LOCK_KEYS[:3])
    if problem:
        raise SpecError(f"{where}: {problem}")
    spec, arguments, weights = lock["spec"], lock["arguments"], lock["weights"]
    for name, value in (("spec", spec), ("arguments", arguments), ("weights", weights)):
        if not isinstance(value, dict):
            raise SpecError(f"{where}: {name} must be an object, found {type(value).__name__}")
    for key, digest in weights.items():
        if not FIELD.fullmatch(key) or not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise SpecError(f"{where}: weights entry {key[:60]!r} must map a spec field (table.field) to a SHA-256")
    check_recorded_arguments(arguments, where)
    if arguments["latents"] or arguments["image"] or arguments["mask"]:
        raise SpecError(f"{image}: cannot replay: the run used explicit latents or an init image, which the lock "
                        "does not store; replay it from Python with the same inputs")
    spec = {table: value for table, value in spec.items() if table not in TRAINING_TABLES}
    spec = rebase_paths(spec, weights, Path(image).absolute().parent, relative=False)
    kept = {k: v for k, v in arguments.items() if k not in ("latents", "image", "mask")}
    return Recorded(spec=spec, arguments=kept, weights=dict(weights))


def keys_problem(found: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> str | None:
    """What is wrong with the keys of a lock object (missing or unknown ones), or None."""
    missing = [key for key in required if key not in found]
    unknown = sorted(set(found) - set(allowed))
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if unknown:
        problems.append(f"unknown {', '.join(repr(key[:40]) for key in unknown)} (allowed: {', '.join(allowed)})")
    return "; ".join(problems) or None


def check_recorded_arguments(arguments: dict[str, Any], where: str) -> None:
    """The fixed argument keys, each of its type, each in range (``check_arguments``)."""
    problem = keys_problem(arguments, tuple(ARGUMENTS), tuple(ARGUMENTS))
    if problem:
        raise SpecError(f"{where}: arguments {problem}")
    for key, (expected, accepts) in ARGUMENTS.items():
        if not accepts(arguments[key]):
            raise SpecError(f"{where}: arguments {key} must be {expected}, found {str(arguments[key])[:60]!r}")
    labels = arguments["labels"]
    try:
        check_arguments(num_images=arguments["num_images"], height=arguments["height"], width=arguments["width"],
                        steps=arguments["steps"], seed=arguments["seed"],
                        conditions=max(len(v) if isinstance(v, list) else 1 for v in (arguments["prompt"], labels)))
    except ArgumentError as exc:
        raise SpecError(f"{where}: arguments {exc.argument}: {exc.problem}") from None


def check_generation_task(spec: dict[str, Any], registry: Registry, where: str) -> None:
    """Refuse spec data whose task is a training task (or that has none): generation must never
    start a training that writes checkpoints wherever its spec says."""
    task = spec.get("task")
    name = task.get("type") if isinstance(task, dict) else task
    if not isinstance(name, str):
        raise SpecError(f"{where}: the spec names no task; `sfumato generate` runs generation tasks only")
    entry = registry.components.get("task", {}).get(name)
    if entry is not None and issubclass(entry.cls, TrainingTask):
        raise SpecError(f"{where}: task {name!r} is a training task; `sfumato generate` runs generation tasks "
                        "only (train with `sfumato train`)")


def weights_changes(spec: dict[str, Any], weights: dict[str, str], redirected: set[str]) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` for the recorded weights of ``spec``: a file that is missing or whose
    SHA-256 differs is a problem, or a note when a ``--set`` override redirected its field."""
    current = {name: path for name, (_, path) in recorded_paths(spec, weights).items()}
    problems, notes = [], []
    for name, digest in weights.items():
        chosen = any(name == key or name.startswith(key + ".") for key in redirected)
        path = current.get(name)
        if path is None:
            (notes if chosen else problems).append(f"{name}: not a field of the lock's spec")
        elif not Path(path).exists():
            problems.append(f"{name} = {path}: missing")
        elif path_sha256(path) != digest:
            (notes if chosen else problems).append(f"{name} = {path}: changed (sha256 differs from the lock)")
    return problems, notes


def replay_pipeline(image: str | Path, overrides: list[str] | None = None,
                    registry: Registry | None = None) -> tuple[Pipeline, dict[str, Any], list[str]]:
    """``(pipeline, arguments, notes)`` to repeat the run recorded in ``image``:
    ``sfumato.generate(pipeline, **arguments)`` (under the spec's ``[runtime]`` autocast) makes the
    same images. ``overrides`` apply to the lock's spec; ``notes`` name weights they changed.

    :raises SpecError: for a malformed lock, a training task, or weights that differ.
    """
    registry = registry or get_registry()
    recorded = read_recorded(image)
    data = apply_overrides(recorded.spec, overrides)
    check_generation_task(data, registry, str(image))
    redirected = {".".join(parse_override(o).path) for o in overrides or []}
    problems, notes = weights_changes(data, recorded.weights, redirected)
    if problems:
        moved = [p.split(" = ", 1)[0] for p in problems if " = " in p]
        raise SpecError(f"{image}: cannot replay, weights differ from the lock: " + "; ".join(problems)
                        + (f" (point at a copy with --set {moved[0]}=PATH)" if moved else ""))
    try:
        spec = validate_spec(data, registry)
    except SpecError as exc:
        raise SpecError(exc.problems, source=f"{image} (its lock's spec)") from None
    return Pipeline(spec, registry, source=str(image)), recorded.arguments, notes
