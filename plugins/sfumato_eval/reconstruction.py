"""``sfumato eval shapes-reconstruction``: the shapes detector on held-out scenes, as drawn and
after a round trip through a model's ``[autoencoder]``.

A latent diffusion model draws in its autoencoder's latent space, so a scene the detector cannot
read after ``decode(encode(image))`` is a scene the model cannot be scored right on, however well
its denoiser is trained: the reconstruction figures bound its GenEval-style score from above.
"""

from __future__ import annotations

import argparse
from typing import Any

import sfumato
import torch

from .commands import format_table, load_model, model_name, positive_int, results_file, write_json
from .shapes_detector import detect_shapes


def detector_agreement(images: torch.Tensor, scenes: list[list[tuple[str, str]]]) -> dict[str, float]:
    """``exact_scenes``: share of images whose detected (shape, colour) objects are exactly the
    scene's; ``objects_found``: share of the scenes' objects detected with the right colour."""
    exact = found = total = 0
    for image, truth in zip(images, scenes):
        detected = sorted((o["shape"], o["color"]) for o in detect_shapes(image))
        exact += detected == sorted(truth)
        found += sum(obj in detected for obj in truth)
        total += len(truth)
    return {"exact_scenes": exact / len(scenes), "objects_found": found / total}


@torch.no_grad()
def reconstruction_report(autoencoder: Any, count: int = 300, seed: int = 11, resolution: int = 64,
                          batch_size: int = 50) -> dict[str, Any]:
    """Detector agreement on ``count`` held-out shapes scenes (dataset ``seed``), as drawn and
    through ``autoencoder`` (any ``sfumato.Autoencoder``: ``decode(encode(x))`` in [-1, 1])."""
    dataset = sfumato.build("dataset", {"type": "shapes", "resolution": resolution, "length": count, "seed": seed})
    items = [dataset[i] for i in range(count)]
    images = torch.stack([item["image"] for item in items])  # (N, 3, H, W) in [-1, 1]
    scenes = [[(o["shape"], o["color"]) for o in item["attributes"]["objects"]] for item in items]
    weight = next(autoencoder.parameters(), None)  # none for the identity (pixel-space) autoencoder
    device, dtype = (weight.device, weight.dtype) if weight is not None else (torch.device("cpu"), torch.float32)
    rebuilt = torch.cat([
        autoencoder.decode(autoencoder.encode(batch.to(device, dtype))).float().clamp(-1, 1).cpu()
        for batch in images.split(batch_size)
    ])
    return {"scenes": count, "dataset_seed": seed, "resolution": resolution,
            "drawn": detector_agreement(images, scenes), "reconstructed": detector_agreement(rebuilt, scenes)}


def run(args: argparse.Namespace) -> int:
    pipe = load_model(args)
    if pipe.autoencoder is None:
        raise sfumato.SpecError(f"{model_name(args)} has no [autoencoder] table: there is nothing to reconstruct through")
    report = reconstruction_report(pipe.autoencoder, args.count, args.dataset_seed, args.resolution)
    rows = [[name, report[name]["exact_scenes"], report[name]["objects_found"]] for name in ("drawn", "reconstructed")]
    print(format_table(["images", "exact scenes", "objects found"], rows))
    if args.out:
        write_json(args.out, {"benchmark": "shapes-reconstruction", "model": model_name(args), "overrides": args.set,
                              **report})
    return 0


def add_reconstruction_command(cli: Any) -> None:
    parser = cli.add_parser(
        "shapes-reconstruction", help="the shapes detector on scenes through a model's autoencoder (a GenEval ceiling)",
        description="Detect the objects of held-out shapes scenes as drawn and after decode(encode(image)) "
        "through the model's [autoencoder]: the share of scenes read exactly bounds a latent model's GenEval score.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a built-in model name (see `sfumato models`)")
    source.add_argument("--spec", metavar="FILE", help="a spec file with an [autoencoder] table")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--count", type=positive_int, default=300, help="held-out scenes (default 300)")
    parser.add_argument("--dataset-seed", type=int, default=11, help="seed of the scenes (default 11; training "
                        "specs of the built-in models use seeds 1 to 6)")
    parser.add_argument("--resolution", type=positive_int, default=64, help="image side (default 64)")
    parser.add_argument("--out", type=results_file, metavar="RESULTS.json", help="write the figures as JSON")
    parser.set_defaults(handler=run)
