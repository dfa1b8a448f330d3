"""``sfumato eval zero-shot`` and ``sfumato eval retrieval``: CLIP evaluated on a dataset built
with ``sfumato.build("dataset", ...)`` (the rules are in ``evaluation``)."""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path
from typing import Any

import sfumato

from .arguments import check_out, positive_int
from .cli import add_encoder_arguments, load_encoders
from .evaluation import labelled_task, read_items, retrieval_scores, retrieval_set, shapes_tasks, zero_shot_scores

#: Evaluation defaults per dataset type, used unless ``--data`` sets the field: held-out shapes
#: scenes (training uses seed 0), and the test split of datasets that have one (a dataset whose
#: ``split`` has no ``test``, such as ``imagefolder``, keeps its own default: all of it).
SHAPES_DEFAULTS = {"seed": 1, "length": 1000}


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


def _print_figures(title: str, figures: dict[str, Any]) -> None:
    width = max(len(name) for name in figures)
    print(title)
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value:.3f}" if isinstance(value, float) else f"  {name:<{width}}  {value}")


def _write(path: str | None, report: dict[str, Any]) -> None:
    if path:
        sfumato.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
        print(f"wrote {path}")


def run_zero_shot(args: argparse.Namespace) -> int:
    if args.out:
        check_out(args.out, overwrite=True)
    spec = dataset_spec(args.dataset, args.data, zero_shot=True)
    items = read_items(sfumato.build("dataset", spec), args.limit)
    tasks = shapes_tasks(items) if args.dataset == "shapes" else [labelled_task(items)]
    text_encoder, image_encoder = load_encoders(args)
    results = {task.name: zero_shot_scores(text_encoder, image_encoder, task, args.batch_size) for task in tasks}
    for name, figures in results.items():
        _print_figures(f"zero-shot {name} on {args.dataset}", figures)
    _write(args.out, {"benchmark": "zero-shot", "dataset": spec, "tasks": results})
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    if args.out:
        check_out(args.out, overwrite=True)
    spec = dataset_spec(args.dataset, args.data)
    images, captions = retrieval_set(read_items(sfumato.build("dataset", spec), args.limit))
    text_encoder, image_encoder = load_encoders(args)
    results = retrieval_scores(text_encoder, image_encoder, images, captions, args.batch_size)
    _print_figures(f"retrieval on {args.dataset}", results)
    _write(args.out, {"benchmark": "retrieval", "dataset": spec, **results})
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="TYPE", help="a dataset type: digits, shapes, cifar10, ...")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset spec field (repeatable): root=data/cifar-10, split=val, resolution=32")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N items")
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--out", metavar="RESULTS.json", help="write the figures as JSON")
    add_encoder_arguments(parser)


def register(cli: Any) -> None:
    """Add ``zero-shot`` and ``retrieval`` to ``sfumato eval``."""
    zero_shot = cli.add_parser("zero-shot", help="CLIP zero-shot top-1/top-5 accuracy on a dataset",
                               description="Classify a dataset's images among its classes (for shapes: colour "
                               "and shape separately), with the dataset's captions as prompts.")
    _add_common(zero_shot)
    zero_shot.set_defaults(handler=run_zero_shot)

    retrieval = cli.add_parser("retrieval", help="CLIP retrieval recall@1/5/10, image->text and text->image",
                               description="Embed a dataset's images and captions; an image's retrieval "
                               "counts as a hit when any of its captions is among the k nearest.")
    _add_common(retrieval)
    retrieval.set_defaults(handler=run_retrieval)
