"""The datasets the evaluations read, reached through the registry as any plugin's would be (this
plugin imports no other): built with ``sfumato.build``, read through the ``Dataset`` interface,
and the ``shapes`` vocabulary and ``digits`` caption from the registered dataset classes."""

from __future__ import annotations

import json
import tomllib
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import sfumato
import torch
from torch import Tensor

#: Evaluation defaults per dataset type, used unless ``--data`` sets the field: held-out shapes
#: scenes (training uses seed 0), and the test split of datasets that have one (a dataset whose
#: ``split`` has no ``test``, such as ``imagefolder``, keeps its own default: all of it).
SHAPES_DEFAULTS = {"seed": 1, "length": 1000}


def dataset_class(type_name: str, needed_for: str) -> type:
    """The registered dataset class ``type_name``; when there is none, a ``SpecError`` saying that
    ``needed_for`` comes from it (the ``data`` plugin provides it)."""
    try:
        return sfumato.get_registry().get("dataset", type_name)
    except sfumato.SpecError as exc:
        raise sfumato.SpecError(f"{needed_for} comes from the {type_name!r} dataset of the data plugin: "
                                f"{exc}") from None


def shapes_vocabulary() -> ModuleType:
    """The ``shapes`` dataset's vocabulary (``ShapesDataset.vocabulary``): ``SHAPES``, ``COLORS``
    with their RGB, ``FILL_RATIOS``, ``NUMBER_WORDS``, ``RELATIONS``, ``object_phrase``,
    ``spatial_relations``, ``region_of``, ``size_name``, ... (docs/datasets.md)."""
    return dataset_class("shapes", "the shapes vocabulary (colours, shapes, relations, prompt wording)").vocabulary


def digits_caption_template() -> str:
    """The ``digits`` dataset's caption, ``{}`` standing for the digit: ``"a handwritten digit {}"``."""
    return dataset_class("digits", "the digits caption template").caption_template


def read_items(dataset: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` items of a dataset (all when None); an empty dataset is an error."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise sfumato.SpecError(f"[dataset] type {dataset.spec.type!r} holds no items to evaluate on")
    return [dataset[i] for i in range(count)]


def labelled_images(spec: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``(images [N, 3, H, W] in [-1, 1], labels [N])``: every item of the dataset ``spec`` builds."""
    items = read_items(sfumato.build("dataset", spec))
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def _value(text: str) -> Any:
    """``--data`` values: JSON when they parse (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


#: The spec a training run writes into its output folder (``sfumato.train``).
RUN_SPEC = "trained.toml"
#: Evaluation reads every image as it is: no random crop, no flip.
DETERMINISTIC = {"crop": "center", "hflip": False}


def spec_dataset_table(spec_file: str | Path) -> dict[str, Any] | None:
    """The ``[dataset]`` table of a spec file (a run's ``trained.toml``), its relative ``root``
    resolved against the file's folder as sfumato resolves spec paths; None without one."""
    path = Path(spec_file)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("dataset")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # loading the model reports what is wrong with the file
    if not isinstance(table, dict) or "type" not in table:
        return None
    table = dict(table)
    if isinstance(table.get("root"), str) and not Path(table["root"]).is_absolute():
        table["root"] = str((path.parent / table["root"]).resolve())
    return table


def run_dataset(weights: str | None, spec: str | None) -> tuple[dict[str, Any] | None, str]:
    """The dataset a training run trained on, when ``--weights`` is a run folder or ``--spec`` a
    file with a ``[dataset]`` table, and the file it came from."""
    source = Path(spec) if spec else Path(weights) / RUN_SPEC if weights and Path(weights).is_dir() else None
    if source is None or not source.is_file():
        return None, ""
    return spec_dataset_table(source), str(source)


def held_out(table: dict[str, Any], source: str) -> dict[str, Any]:
    """A run's training dataset turned into its held-out counterpart: the ``test`` split (else
    ``val``), read deterministically (no random crop or flip)."""
    try:
        fields = sfumato.get_registry().get("dataset", table["type"]).Spec.model_fields
    except sfumato.SpecError as exc:
        raise sfumato.SpecError(f"{source}: [dataset]: {exc}") from None
    splits = typing.get_args(fields["split"].annotation) if "split" in fields else ()
    split = next((s for s in ("test", "val") if s in splits), None)
    if split is None:
        raise sfumato.SpecError(f"{source}: the run trained on [dataset] type {table['type']!r}, which has no test or "
                                "val split to evaluate on; give --dataset TYPE --data ... for a held-out set")
    held = {**table, "split": split}
    held.update({k: v for k, v in DETERMINISTIC.items() if k in fields})
    return held


def dataset_spec(dataset_type: str | None, options: list[str], zero_shot: bool = False,
                 run: tuple[dict[str, Any] | None, str] = (None, "")) -> dict[str, Any]:
    """The spec of ``--dataset TYPE --data KEY=VALUE ...`` with the evaluation defaults; without
    ``--dataset``, the held-out split of the dataset the run trained on (``run``: its
    ``[dataset]`` table and the file it came from, from ``run_dataset``)."""
    table, source = run
    if dataset_type is None:
        if table is None:
            raise sfumato.SpecError("give the dataset to evaluate on with --dataset TYPE (or --weights a training run "
                                    "folder, whose trained.toml names the dataset it trained on)")
        dataset_type = table["type"]
        spec = dict(table) if dataset_type == "shapes" else held_out(table, source)  # shapes: held-out seed below
    else:
        spec = {"type": dataset_type}
        fields = sfumato.get_registry().get("dataset", dataset_type).Spec.model_fields
        if "split" in fields and "test" in typing.get_args(fields["split"].annotation):
            spec["split"] = "test"
    if dataset_type == "shapes":
        spec.update(SHAPES_DEFAULTS, **({"scenes": ["single"]} if zero_shot else {}))
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise sfumato.SpecError(f"--data {option!r}: expected KEY=VALUE, for example root=data/cifar-10")
        spec[key.strip()] = _value(value.strip())
    return spec
