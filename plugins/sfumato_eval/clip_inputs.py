"""What the CLIP evaluations (``zero-shot``, ``retrieval``) take: a dataset and the two towers
from the command line (the towers built through the registry, types ``clip-text`` and
``clip-image``), and the towers' unit-norm embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sfumato
import torch
import torch.nn.functional as F
from torch import Tensor

from .commands import positive_int, results_file


def add_clip_eval_arguments(parser: argparse.ArgumentParser, datasets: bool = True) -> None:
    """``--dataset TYPE``, ``--data KEY=VALUE`` (unless not ``datasets``), ``--limit``,
    ``--batch-size``, ``--out``, and the towers: ``--spec FILE | --weights PATH``,
    ``--architecture``, ``--device``."""
    if datasets:
        parser.add_argument("--dataset", metavar="TYPE", help="a dataset type: digits, shapes, cifar10, ... (default: "
                            "the test split of the dataset a training run folder given as --weights trained on)")
        parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                            help="a dataset spec field (repeatable): root=data/cifar-10, split=val, resolution=32")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N items")
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--out", type=results_file, metavar="RESULTS.json", help="write the figures as JSON")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--spec", metavar="FILE", help="a spec with [text_encoder] and [image_encoder] tables")
    source.add_argument("--weights", metavar="PATH",
                        help="a CLIP .safetensors file or transformers CLIP folder holding both towers")
    parser.add_argument("--architecture", metavar="NAME", help="a preset when the weights do not record one")
    parser.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default)")


def load_encoders(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(text_encoder, image_encoder)`` in eval mode on ``--device``: the ``[text_encoder]`` and
    ``[image_encoder]`` tables of ``--spec``, or both towers of the CLIP file ``--weights``."""
    device = sfumato.resolve_device(args.device)
    if args.spec:
        pipeline = sfumato.load_pipeline(args.spec)
        text, image = pipeline.text_encoder, pipeline.image_encoder
        if text is None or image is None:
            raise sfumato.SpecError("needs both [text_encoder] and [image_encoder] tables", source=args.spec)
    elif args.weights:
        tower = {"weights": str(Path(args.weights).resolve()), "architecture": args.architecture}
        text = sfumato.build("encoder", {"type": "clip-text", **tower})
        image = sfumato.build("encoder", {"type": "clip-image", **tower})
    else:
        raise sfumato.SpecError("give the CLIP model with --spec FILE or --weights PATH")
    return text.to(device).eval(), image.to(device).eval()


@torch.no_grad()
def image_embeddings(image_encoder: Any, images: Tensor, batch_size: int = 256) -> Tensor:
    """``[N, E]`` unit-norm embeddings of ``images [N, 3, H, W]`` in [-1, 1], on the CPU."""
    device = next(image_encoder.parameters()).device if hasattr(image_encoder, "parameters") else "cpu"
    chunks = [image_encoder.encode(images[i : i + batch_size].to(device)).pooled.float().cpu()
              for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


@torch.no_grad()
def text_embeddings(text_encoder: Any, texts: list[str], batch_size: int = 256) -> Tensor:
    """``[M, E]`` unit-norm embeddings of ``texts``, on the CPU."""
    chunks = [text_encoder.encode(texts[i : i + batch_size]).pooled.float().cpu()
              for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)
