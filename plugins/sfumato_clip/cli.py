"""The ``sfumato classify`` and ``sfumato search`` commands.

Both need a CLIP text and image encoder, given either as a spec file with ``[text_encoder]`` and
``[image_encoder]`` tables (``--spec``) or as one weights file or folder (``--weights``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import sfumato
import torch

from .arguments import check_out, positive_int
from .images import check_image_file, encode_file_inputs, file_input
from .ann import EF_SEARCH, AnnGraph, graph_path, load_graph, require_faiss
from .search import SearchIndex, build_index, encoder_identity, index_files, query_image, query_text, update_index
from .zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier

#: How many skipped images ``search index`` lists by name.
SKIPPED_SHOWN = 10


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--spec", metavar="FILE", help="a spec with [text_encoder] and [image_encoder] tables")
    source.add_argument("--weights", metavar="PATH",
                        help="a CLIP .safetensors file or transformers CLIP folder holding both towers")
    parser.add_argument("--architecture", metavar="NAME", help="a preset when the weights do not record one")
    parser.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default)")


def encoder_specs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The text and image encoder specs that ``--weights`` / ``--architecture`` describe."""
    common = {"weights": str(Path(args.weights).resolve()) if args.weights else None,
              "architecture": args.architecture}
    return {"type": "clip-text", **common}, {"type": "clip-image", **common}


def load_encoders(args: argparse.Namespace, recorded: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Build ``(text_encoder, image_encoder)`` from ``--spec``, ``--weights`` or, failing both,
    the specs ``recorded`` in a search index."""
    device = sfumato.resolve_device(args.device)
    if args.spec:
        pipeline = sfumato.load_pipeline(args.spec)
        text, image = pipeline.text_encoder, pipeline.image_encoder
        if text is None or image is None:
            raise sfumato.SpecError("needs both [text_encoder] and [image_encoder] tables", source=args.spec)
    else:
        if args.weights is None and not (recorded and {"text_encoder", "image_encoder"} <= set(recorded)):
            raise sfumato.SpecError("give the CLIP model with --spec FILE or --weights PATH")
        text_spec, image_spec = (recorded["text_encoder"], recorded["image_encoder"]) if args.weights is None \
            else encoder_specs(args)
        text, image = sfumato.build("encoder", text_spec), sfumato.build("encoder", image_spec)
    return text.to(device).eval(), image.to(device).eval()


def parse_labels(text: str) -> list[str]:
    """The class names of ``--labels "cat, dog,car"``, each once (a repeat is dropped with a
    warning: it would split its class's probability in two), at least two."""
    given = [label.strip() for label in text.split(",") if label.strip()]
    labels = list(dict.fromkeys(given))
    if len(labels) < 2:
        raise sfumato.SpecError(
            f"--labels {text!r}: give at least two distinct class names, comma-separated, e.g. --labels \"cat,dog\" "
            "(the probabilities are a softmax over the labels, so a single label always scores 1.0)"
        )
    if len(labels) < len(given):
        repeated = sorted({label for label in given if given.count(label) > 1})
        print(f"warning: --labels names {', '.join(map(repr, repeated))} more than once; each class is scored once",
              file=sys.stderr)
    return labels


def check_template(template: str) -> str:
    """A ``--template`` must hold ``{}`` where the label goes and no other placeholder."""
    try:
        template.format("label")
        fits = "{}" in template
    except (KeyError, IndexError, ValueError):
        fits = False
    if not fits:
        raise sfumato.SpecError(f"--template {template!r}: expected a prompt with {{}} where the label goes and "
                                "no other braces, e.g. \"a photo of a {}.\"")
    return template


def run_classify(args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels)
    templates = tuple(check_template(t) for t in args.template) if args.template else DEFAULT_TEMPLATES
    for path in args.images:
        check_image_file(path)
    text_encoder, image_encoder = load_encoders(args)
    classifier = ZeroShotClassifier(text_encoder, image_encoder, labels, templates)
    results = []
    for path in args.images:
        with torch.no_grad():
            embeds = encode_file_inputs(image_encoder, file_input(image_encoder, path)[None])
        (prediction,) = classifier.ranked(classifier.scores(embeds), k=args.k)
        results.append((path, prediction))
        if args.format == "text":
            ranked = ", ".join(f"{label} {prob:.3f}" for label, prob in zip(prediction.labels, prediction.probs))
            print(f"{path}: {ranked}")
    if args.format == "json":
        print(json.dumps({"logit_scale": classifier.logit_scale, "labels": labels, "results": [
            {"image": path, "labels": p.labels, "probs": p.probs} for path, p in results]}, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", "rank", "label", "prob"])
        for path, p in results:
            writer.writerows([path, rank, label, f"{prob:.6f}"]
                             for rank, (label, prob) in enumerate(zip(p.labels, p.probs), start=1))
    return 0


def report_skipped(skipped: list[str]) -> None:
    """Tell the user which images ``search index`` left out, on stderr."""
    print(f"warning: skipped {len(skipped)} unreadable image(s) (--strict makes this an error):", file=sys.stderr)
    for line in skipped[:SKIPPED_SHOWN]:
        print(f"  {line}", file=sys.stderr)
    if len(skipped) > SKIPPED_SHOWN:
        print(f"  ... and {len(skipped) - SKIPPED_SHOWN} more", file=sys.stderr)


def run_index(args: argparse.Namespace) -> int:
    if args.update and args.overwrite:
        raise sfumato.SpecError("give --update (bring the index up to date) or --overwrite (build it anew), not both")
    existing = SearchIndex.load(args.out) if args.update and Path(args.out).exists() else None
    if existing is None:
        check_out(args.out, args.overwrite)
    args.ann = args.ann or bool(existing and existing.ann)  # an update keeps the index's graph up to date too
    if args.ann:
        require_faiss()
    index_files(args.folder)
    text_encoder, image_encoder = load_encoders(args, existing.encoders if existing else None)
    if existing is not None:
        existing.check_encoder(text_encoder, "text_encoder", purpose="update")
        existing.check_encoder(image_encoder, "image_encoder", purpose="update")
        index, update = update_index(existing, image_encoder, args.folder, batch_size=args.batch_size,
                                     strict=args.strict)
    else:
        index = build_index(image_encoder, args.folder, batch_size=args.batch_size, strict=args.strict)
        index.encoders = {"text_encoder": text_encoder.spec.model_dump(mode="json"),
                          "image_encoder": image_encoder.spec.model_dump(mode="json")}
        index.identity = encoder_identity(text_encoder, image_encoder)
    index.ann = None
    if args.ann:
        graph = AnnGraph.build(index.embeddings)
        graph.save(graph_path(args.out))
        index.ann = graph.record(index.embeddings)
    index.save(args.out)
    if index.skipped:
        report_skipped(index.skipped)
    if existing is not None:
        print(f"updated {args.out}: {len(update.kept)} kept, {len(update.added)} added, {len(update.changed)} "
              f"re-encoded (changed), {len(update.removed)} removed; {len(index)} images")
    else:
        print(f"indexed {len(index)} images from {args.folder} into {args.out}")
    if args.ann:
        print(f"wrote the ANN graph {graph_path(args.out)}")
    return 0


def run_query(args: argparse.Namespace) -> int:
    if args.image and args.text:
        raise sfumato.SpecError("give a query text or --image FILE, not both")
    if not args.image and not args.text:
        raise sfumato.SpecError('give a query text ("a red car") or --image FILE')
    index = SearchIndex.load(args.index)
    if args.image:
        check_image_file(args.image)
    graph = None
    if args.backend == "ann":
        graph = load_graph(index, args.index)
        graph.ef_search = args.ef_search
    text_encoder, image_encoder = load_encoders(args, index.encoders)
    if args.image:
        index.check_encoder(image_encoder, "image_encoder")
        hits = query_image(index, image_encoder, args.image, k=args.k, graph=graph)
    else:
        index.check_encoder(text_encoder, "text_encoder")
        hits = query_text(index, text_encoder, args.text, k=args.k, graph=graph)
    for hit in hits:
        print(f"{hit.score:.4f}  {Path(index.root, hit.file) if index.root else hit.file}")
    return 0


def register(cli: Any) -> None:
    """Add ``classify`` and ``search {index, query}`` to the ``sfumato`` parser."""
    classify = cli.add_parser("classify", help="zero-shot classify images with CLIP")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--labels", required=True, help='comma-separated class names: "cat,dog,car"')
    classify.add_argument("--template", action="append", metavar="TEXT",
                          help='a prompt template with {} for the label (repeatable; default: 10 of OpenAI\'s)')
    classify.add_argument("-k", type=positive_int, default=5, help="how many labels to show per image")
    classify.add_argument("--format", choices=("text", "json", "csv"), default="text",
                          help="text: one line per image (default); json: one document; csv: image,rank,label,prob rows")
    add_encoder_arguments(classify)
    classify.set_defaults(handler=run_classify)

    search = cli.add_parser("search", help="semantic image search with CLIP")
    actions = search.add_subparsers(dest="search_command", metavar="ACTION", required=True)
    index = actions.add_parser("index", help="embed a folder of images into an index file")
    index.add_argument("folder", metavar="DIR")
    index.add_argument("--out", required=True, metavar="INDEX", help="the .safetensors index to write")
    index.add_argument("--overwrite", action="store_true", help="replace INDEX if it exists")
    index.add_argument("--update", action="store_true",
                       help="bring an existing INDEX up to date: embed new and changed images, drop removed ones, "
                       "keep the rest (the model must be the one that built it; default: the one it records)")
    index.add_argument("--ann", action="store_true",
                       help="also build an approximate-nearest-neighbour graph, INDEX.faiss (needs sfumato[ann])")
    index.add_argument("--strict", action="store_true",
                       help="fail on an unreadable image (default: skip it and list it on stderr)")
    index.add_argument("--batch-size", type=positive_int, default=32)
    add_encoder_arguments(index)
    index.set_defaults(handler=run_index)

    query = actions.add_parser("query", help="find the images that best match a text or an image")
    query.add_argument("index", metavar="INDEX")
    query.add_argument("text", nargs="?", default="", help="the caption to search for")
    query.add_argument("--image", metavar="FILE", help="search by this image instead of text")
    query.add_argument("-k", type=positive_int, default=5, help="how many images to list")
    query.add_argument("--backend", choices=("exact", "ann"), default="exact",
                       help="exact: compare with every image (default); "
                       "ann: the index's HNSW graph (search index --ann)")
    query.add_argument("--ef-search", type=positive_int, default=EF_SEARCH,
                       help=f"ann: the search beam (default {EF_SEARCH}; more: better recall, slower)")
    add_encoder_arguments(query)
    query.set_defaults(handler=run_query)
