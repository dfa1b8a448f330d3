"""The datasets the evaluations read, reached through the registry as any plugin's would be (this
plugin imports no other): built with ``sfumato.build``, read through the ``Dataset`` interface,
and the ``shapes`` vocabulary and ``digits`` caption from the registered dataset classes."""

from __future__ import annotations

import json
import typing
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


def dataset_spec(dataset_type: str, options: list[str], zero_shot: bool = False) -> dict[str, Any]:
    """The spec of ``--dataset TYPE --data KEY=VALUE ...`` with the evaluation defaults."""
    spec: dict[str, Any] = {"type": dataset_type}
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
