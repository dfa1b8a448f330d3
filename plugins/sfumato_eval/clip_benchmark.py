"""``sfumato eval clip-benchmark``: a CLIP over several datasets in one run, as LAION's
CLIP_benchmark measures one: zero-shot classification with per-dataset class names and prompt
templates, a linear probe and few-shot probes on the frozen image features, and image-text
retrieval; written as a markdown table and JSON.

Which tasks a dataset gets follows from what its items hold: labelled items (``digits``,
``cifar10``, class folders) and ``shapes`` (colour and shape of its single-object scenes) are
classified; items with several captions (``digits``, ``shapes``, ``flickr8k``) or with captions
and no label (captioned image folders) are retrieved. The probes train on the dataset's ``train``
split (``shapes``: the training seed 0) and every task scores the held-out split (``test``, else
``val``); a dataset without both is not probed, and the report says why.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sfumato
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .clip_inputs import add_clip_eval_arguments, image_embeddings, load_encoders
from .commands import positive_int, results_file, write_json
from .datasets import DETERMINISTIC, dataset_spec, run_dataset
from .linear_probe import few_shot_probe, linear_probe
from .retrieval import caption_recall
from .zero_shot import ClassLabels, class_embeddings, labelled_classes, shapes_classes, topk_accuracy

TASKS = ("zero-shot", "linear-probe", "few-shot", "retrieval")
#: The class names and templates shipped for the datasets benchmarks prompt in their own words.
BENCHMARK_PROMPTS = Path(__file__).with_name("clip_benchmark_prompts.toml")
DEFAULT_SHOTS = (1, 4, 16)
HELD_OUT = ("test", "val")


@dataclass
class Embedded:
    """A dataset's items without their images (``records``) and the images' unit-norm
    embeddings ``[N, E]``, row for row."""

    spec: dict[str, Any]
    records: list[dict[str, Any]]
    embeddings: Tensor


def parse_dataset(text: str) -> tuple[str, list[str]]:
    """``--dataset TYPE[:KEY=VALUE,KEY=VALUE...]`` -> ``(TYPE, ["KEY=VALUE", ...])``. A comma starts
    a new field only before ``KEY=``, so a JSON list value keeps its commas."""
    dataset_type, _, fields = text.partition(":")
    if not dataset_type.strip():
        raise sfumato.SpecError(f"--dataset {text!r}: expected TYPE[:KEY=VALUE,...], e.g. cifar10:root=data/cifar-10")
    options = [f for f in re.split(r",(?=\s*[A-Za-z_][\w-]*\s*=)", fields) if f.strip()] if fields else []
    for option in options:
        if "=" not in option:
            raise sfumato.SpecError(f"--dataset {text!r}: {option!r} is not KEY=VALUE; expected "
                                    "TYPE[:KEY=VALUE,...], e.g. cifar10:root=data/cifar-10,split=test")
    return dataset_type.strip(), options


def read_prompts(source: str) -> dict[str, dict[str, list[str]]]:
    """Class names and templates per dataset type: ``benchmark`` (the shipped file), ``dataset``
    (none: every dataset is prompted with its own captions) or a TOML file of the shipped form.
    Each table needs ``classnames`` and ``templates`` (each with one ``{}``)."""
    if source == "dataset":
        return {}
    path = BENCHMARK_PROMPTS if source == "benchmark" else Path(source)
    if not path.is_file():
        raise sfumato.SpecError(f"--prompts {source}: no such file; give benchmark, dataset or a TOML file with "
                                "[TYPE] tables of classnames and templates")
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise sfumato.SpecError(f"{path}: not a readable TOML file ({exc})") from None
    prompts = {}
    for name, table in tables.items():
        names, templates = (table.get(key) if isinstance(table, dict) else None for key in ("classnames", "templates"))
        for key, value in (("classnames", names), ("templates", templates)):
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise sfumato.SpecError(f"{path}: [{name}] {key}: expected a non-empty list of strings")
        for template in templates:
            if template.count("{}") != 1 or template.replace("{}", "").count("{") + template.count("}") > 1:
                raise sfumato.SpecError(f"{path}: [{name}] templates: {template!r} needs exactly one {{}} where the "
                                        "class name goes and no other braces")
        prompts[name] = {"classnames": names, "templates": templates}
    return prompts


@torch.no_grad()
def embed_dataset(image_encoder: Any, spec: dict[str, Any], limit: int | None, batch_size: int,
                  progress: bool = True) -> Embedded:
    """Build ``spec``'s dataset and embed its first ``limit`` images (all when None) in batches."""
    dataset = sfumato.build("dataset", spec)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise sfumato.SpecError(f"[dataset] type {spec['type']!r} holds no items to evaluate on")
    records, chunks = [], []
    for start in tqdm(range(0, count, batch_size), desc=f"embedding {spec['type']}", unit="batch",
                      disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, count))]
        chunks.append(image_embeddings(image_encoder, torch.stack([item["image"] for item in items]), batch_size))
        records += [{k: v for k, v in item.items() if k != "image"} for item in items]
    return Embedded(spec, records, torch.cat(chunks))


def class_sets(embedded: Embedded, prompts: dict[str, dict[str, list[str]]]) -> list[tuple[ClassLabels, str]]:
    """The classification tasks of a dataset with where their prompts came from: ``shapes``'
    colour and shape; a labelled dataset's label, prompted with the templates and class names of
    ``prompts`` when it lists the type (every class it names is a candidate), else its captions."""
    records, dataset_type = embedded.records, embedded.spec["type"]
    if dataset_type == "shapes":
        return [(classes, "dataset") for classes in shapes_classes(records)]
    if dataset_type not in prompts:
        return [(labelled_classes(records), "dataset")]
    names, templates = prompts[dataset_type]["classnames"], prompts[dataset_type]["templates"]
    labels = [int(record["label"]) for record in records]
    if max(labels) >= len(names):
        raise sfumato.SpecError(f"the prompts of {dataset_type!r} name {len(names)} classes but the dataset has label "
                                f"{max(labels)}; list a class name for every label, in label order")
    return [(ClassLabels("label", list(range(len(records))), torch.tensor(labels), list(names),
                         [[t.format(name) for t in templates] for name in names]), "benchmark")]


def probe_names(classes: ClassLabels) -> list[str]:
    """The class name of each item ``classes`` scores (what the probes learn)."""
    return [classes.class_names[i] for i in classes.labels.tolist()]


def train_spec(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The training counterpart of a held-out dataset spec, for the probes, or None and why not."""
    if spec["type"] == "shapes":
        if spec.get("seed", 0) == 0:
            return None, "the held-out shapes scenes use the training seed 0; give another seed"
        return {**spec, "seed": 0}, ""
    fields = sfumato.get_registry().get("dataset", spec["type"]).Spec.model_fields
    splits = typing.get_args(fields["split"].annotation) if "split" in fields else ()
    if spec.get("split") not in HELD_OUT or "train" not in splits:
        return None, (f"no train split beside a held-out one (split = {spec.get('split', 'none')!r}); "
                      + ("give split=val" if "train" in splits else "the dataset has no train split"))
    return {**spec, "split": "train", **{k: v for k, v in DETERMINISTIC.items() if k in fields}}, ""


def classification_scores(text_encoder: Any, test: Embedded, train: Embedded | None,
                          prompts: dict[str, dict[str, list[str]]], tasks: list[str], shots: list[int],
                          seed: int) -> dict[str, dict[str, Any]]:
    """Per classification task of ``test`` (``class_sets``): zero-shot top-1/top-5 with
    ``prompts``, and, given the embedded training split ``train``, the probes' top-1. The probes
    learn the dataset's own classes (labels; shapes' colours and shapes), whatever the prompts
    call them."""
    probe_test = {c.name: c for c, _ in class_sets(test, {})}
    probe_train = {c.name: c for c, _ in class_sets(train, {})} if train is not None else {}
    results = {}
    for classes, source in class_sets(test, prompts):
        features = test.embeddings[classes.rows]  # (n, E)
        result: dict[str, Any] = {"prompts": source, "images": len(classes.rows), "classes": len(classes.class_names)}
        if "zero-shot" in tasks:
            weights = class_embeddings(text_encoder, classes.class_prompts)  # (C, E)
            result["zero-shot"] = topk_accuracy(features @ weights.T, classes.labels)
        if classes.name in probe_train:
            learned = probe_train[classes.name]
            train_features, names = train.embeddings[learned.rows], probe_names(learned)
            scored = probe_test[classes.name]
            test_features, test_names = test.embeddings[scored.rows], probe_names(scored)
            if "linear-probe" in tasks:
                probe = linear_probe(train_features, names, seed)
                result["linear-probe"] = {"top1": probe.accuracy(test_features, test_names),
                                          "weight_decay": probe.weight_decay, "train_images": len(names)}
            if "few-shot" in tasks:
                result["few-shot"] = {str(k): {"top1": few_shot_probe(train_features, names, k, seed)
                                               .accuracy(test_features, test_names)} for k in shots}
        results[classes.name] = result
    return results


def dataset_specs(dataset: tuple[str | None, list[str]], args: argparse.Namespace) -> tuple[dict, dict]:
    """``(classification spec, retrieval spec)`` of one ``--dataset`` (they differ for ``shapes``:
    single-object scenes for classification); without ``--dataset``, the run's held-out split."""
    run = run_dataset(args.weights, args.spec)
    dataset_type, options = dataset
    return (dataset_spec(dataset_type, options, zero_shot=True, run=run), dataset_spec(dataset_type, options, run=run))


def benchmark_dataset(text_encoder: Any, image_encoder: Any, specs: tuple[dict, dict], args: argparse.Namespace,
                      prompts: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """Every task of ``args.task`` that applies to one dataset, and why the others were skipped."""
    classify_spec, retrieve_spec = specs
    progress = not args.no_progress
    report: dict[str, Any] = {"dataset": retrieve_spec, "classification": {}, "retrieval": None, "skipped": {}}
    classify = [t for t in args.task if t != "retrieval"]
    test = embed_dataset(image_encoder, classify_spec, args.limit, args.batch_size, progress) if classify else None
    labelled = test is not None and (classify_spec["type"] == "shapes" or all("label" in r for r in test.records))
    if classify and not labelled:
        report["skipped"].update({t: "the items have no labels" for t in classify})
    elif classify:
        train, probes = None, [t for t in classify if t != "zero-shot"]
        if probes:
            spec, why = train_spec(classify_spec)
            if spec is None:
                report["skipped"].update({t: why for t in probes})
            else:
                train = embed_dataset(image_encoder, spec, args.train_limit, args.batch_size, progress)
                report["train_dataset"] = spec
        report["classification"] = classification_scores(text_encoder, test, train, prompts, classify, args.shots,
                                                         args.seed)
    if "retrieval" in args.task:
        images = test if test is not None and retrieve_spec == classify_spec else \
            embed_dataset(image_encoder, retrieve_spec, args.limit, args.batch_size, progress)
        if all("label" in r and len(r.get("captions") or [r.get("caption")]) < 2 for r in images.records):
            report["skipped"]["retrieval"] = "one caption per label (a classification set)"
        else:
            captions = [list(r.get("captions") or [r["caption"]]) for r in images.records]
            report["retrieval"] = caption_recall(images.embeddings, text_encoder, captions, args.batch_size)
    return report


def dataset_names(reports: list[dict[str, Any]]) -> list[str]:
    """A short name per dataset: its type, with its folder when two datasets share a type."""
    types = [r["dataset"]["type"] for r in reports]
    return [t if types.count(t) == 1 else f"{t} ({Path(str(r['dataset'].get('root', i))).name})"
            for i, (t, r) in enumerate(zip(types, reports))]


def markdown_tables(report: dict[str, Any]) -> str:
    """The classification and retrieval figures as two markdown tables (a dash where a task did
    not run)."""
    names = dataset_names(report["datasets"])
    shots = report["shots"] if "few-shot" in report["tasks"] else []
    header = ["dataset", "task", "images", "classes", "zero-shot top-1", "zero-shot top-5", "linear probe top-1",
              *[f"{k}-shot top-1" for k in shots]]
    rows = []
    for name, entry in zip(names, report["datasets"]):
        for task, r in entry["classification"].items():
            zero, probe, few = r.get("zero-shot", {}), r.get("linear-probe", {}), r.get("few-shot", {})
            rows.append([name, task, r["images"], r["classes"], zero.get("top1"), zero.get("top5"), probe.get("top1"),
                         *[few.get(str(k), {}).get("top1") for k in shots]])
    out = []
    if rows:
        out.append(_markdown(header, rows))
    ret_rows = [[name, e["retrieval"]["images"], e["retrieval"]["captions"],
                 *[e["retrieval"][f"{way}@{k}"] for way in ("image_to_text", "text_to_image") for k in (1, 5, 10)]]
                for name, e in zip(names, report["datasets"]) if e["retrieval"]]
    if ret_rows:
        out.append(_markdown(["dataset", "images", "captions", "image->text R@1", "R@5", "R@10", "text->image R@1",
                              "R@5", "R@10"], ret_rows))
    skipped = [f"- {name}: {task} skipped: {why}" for name, e in zip(names, report["datasets"])
               for task, why in e["skipped"].items()]
    return "\n\n".join(out + (["\n".join(skipped)] if skipped else [])) + "\n"


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else "–" if v is None else str(v) for v in row] for row in rows]
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"  # numbers right-aligned
    lines = ["| " + " | ".join(header) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def run(args: argparse.Namespace) -> int:
    prompts = read_prompts(args.prompts)
    datasets = [dataset_specs(parse_dataset(text), args) for text in args.dataset] or [dataset_specs((None, []), args)]
    text_encoder, image_encoder = load_encoders(args)  # after the dataset arguments are checked
    args.task = list(dict.fromkeys(args.task or TASKS))
    args.shots = sorted(set(args.shots or DEFAULT_SHOTS))
    report = {"benchmark": "clip-benchmark", "model": args.weights or args.spec, "tasks": args.task,
              "shots": args.shots, "seed": args.seed, "prompts": args.prompts,
              "datasets": [benchmark_dataset(text_encoder, image_encoder, d, args, prompts) for d in datasets]}
    table = markdown_tables(report)
    print(table, end="")
    if args.table:
        sfumato.atomic_write(Path(args.table), lambda tmp: Path(tmp).write_text(table))
        print(f"wrote {args.table}", file=sys.stderr)
    if args.out:
        write_json(args.out, report)
    return 0


def add_clip_benchmark_command(cli: Any) -> None:
    parser = cli.add_parser(
        "clip-benchmark", help="CLIP zero-shot, linear probe, few-shot and retrieval over several datasets",
        description="Evaluate a CLIP on several datasets in one run, as CLIP_benchmark does: zero-shot "
        "classification with per-dataset class names and templates, linear and few-shot probes on the frozen "
        "image features, and image-text retrieval. Prints a markdown table; --out writes JSON.")
    add_clip_eval_arguments(parser, datasets=False)
    parser.add_argument("--dataset", action="append", default=[], metavar="TYPE[:KEY=VALUE,...]",
                        help="a dataset (repeatable): digits, shapes, cifar10:root=data/cifar-10, "
                        "flickr8k:root=data/flickr8k, imagefolder:root=photos,split=val (default: the held-out "
                        "split of the dataset a training run folder given as --weights trained on)")
    parser.add_argument("--task", action="append", choices=TASKS, help="run only these tasks (repeatable; default all)")
    parser.add_argument("--shots", type=positive_int, action="append", metavar="K",
                        help="images per class of a few-shot probe (repeatable; default 1, 4 and 16)")
    parser.add_argument("--prompts", default="benchmark", metavar="SOURCE",
                        help="class names and templates: benchmark (default: the shipped ones, OpenAI's for "
                        "cifar10; other datasets use their captions), dataset (captions always) or a TOML file")
    parser.add_argument("--train-limit", type=positive_int, metavar="N",
                        help="probe on only the first N training images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probes' validation split and few-shot draws")
    parser.add_argument("--table", type=results_file, metavar="RESULTS.md",
                        help="also write the markdown table to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(handler=run)
