"""Measure the star LoRA: the share of images prompted with "star" that show a star, before and
after loading it, and the same for the shapes the model knew (does it still draw them?).

The judge is a small CNN trained here on procedural single-object images of the four shapes
(stars from ``stars.py``, circles, squares and triangles drawn the same way) and of "other" lumps
(random polygons with 5 to 9 vertices, so that a blob is not forced into a shape), each seen both clean
and round-tripped through the ``shapes`` autoencoder, because every generated image is decoded by
that autoencoder and it softens star points into blobs. Its accuracy on held-out procedural
images (other seeds) is reported beside the figures; an image "shows" a shape when the ``shapes``
detector finds at least one object in it and the CNN names that shape.

    python -m builds.shapes_lora.evaluate --lora plugins/sfumato_models/shapes/star-lora.safetensors

writes ``builds/shapes_lora/eval.json`` and the before/after grid ``docs/shapes-star-lora.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sfumato
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from .stars import BLOB, NEW_SHAPE, VOCABULARY, draw, scene

SHAPES = (NEW_SHAPE, *VOCABULARY.SHAPES)  # star, circle, square, triangle: what the prompts ask for
CLASSES = (*SHAPES, BLOB)  # what the judge tells apart: those, and lumps that are none of them
TRAIN_SEED, HELD_OUT_SEED = 21, 22  # the LoRA's images are seed 11 (make_data.py)
#: The prompts: every colour, in three of the shapes caption templates for the star, the first
#: for the shapes the model knew (the check that it still draws them).
TEMPLATES = ("a {color} {shape}", "a large {color} {shape}", "a small {color} {shape} in the center")


class ShapeClassifier(nn.Module):
    """Which of ``CLASSES`` a 64 px single-object image shows: three stride-2 convolutions and a
    linear head on the pooled features."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.SiLU(), nn.Conv2d(64, 64, 3, 1, 1), nn.SiLU())
        self.head = nn.Linear(128, len(CLASSES))

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, 64, 64) in [-1, 1] -> (B, 5)
        f = self.features(images)  # (B, 64, 8, 8)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))


def procedural(seed: int, per_shape: int, autoencoder: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """``(clean, round-tripped, labels)``: single-object images of each shape, ``[N, 3, 64, 64]``."""
    images, labels = [], []
    for label, shape in enumerate(CLASSES):
        images += [draw(scene(seed, i, shape, count_share=0.0)[0]) for i in range(per_shape)]
        labels += [label] * per_shape
    clean = sfumato.from_pil(images)
    with torch.no_grad():
        decoded = torch.cat([autoencoder.decode(autoencoder.encode(chunk)).clamp(-1, 1) for chunk in clean.split(64)])
    return clean, decoded, torch.tensor(labels)


def train_classifier(autoencoder: nn.Module, steps: int = 1500, per_shape: int = 250,
                     cache: Path = Path("runs/shapes-lora/shape-classifier-5.safetensors")) -> ShapeClassifier:
    """Train the judge (seeded: the same weights every time), or read the ones ``cache`` holds."""
    torch.manual_seed(0)
    model = ShapeClassifier()
    if cache.is_file():
        model.load_state_dict(sfumato.load_weights(cache))
        return model.eval()
    clean, decoded, labels = procedural(TRAIN_SEED, per_shape, autoencoder)
    images, labels = torch.cat([clean, decoded]), torch.cat([labels, labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in tqdm(range(steps), desc="shape classifier"):
        batch = torch.randint(0, len(images), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sfumato.save_weights(model.state_dict(), cache)
    return model.eval()


def accuracy(model: ShapeClassifier, images: Tensor, labels: Tensor) -> dict[str, float]:
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in images.split(128)])
    return {shape: round((predicted[labels == k] == k).float().mean().item(), 3) for k, shape in enumerate(CLASSES)}


def shows(model: ShapeClassifier, images: list[Image.Image]) -> list[str | None]:
    """The shape each image shows, or None when the detector finds no object in it."""
    from sfumato_eval.shapes_detector import detect_shapes

    with torch.no_grad():
        predicted = model(sfumato.from_pil(images)).argmax(1).tolist()
    return [CLASSES[p] if detect_shapes(image) else None for p, image in zip(predicted, images)]


def prompts(shape: str) -> list[str]:
    templates = TEMPLATES if shape == NEW_SHAPE else TEMPLATES[:1]
    return [template.format(color=color, shape=shape) for template in templates for color in VOCABULARY.COLORS]


def generate(pipe: sfumato.Pipeline, texts: list[str], seeds: int) -> list[Image.Image]:
    """``seeds`` images per prompt (seeds 0, 1, ...), prompt after prompt."""
    images = []
    for start in tqdm(range(0, len(texts), 8), desc="generating", leave=False):
        chunk = texts[start:start + 8]
        batch = [text for text in chunk for _ in range(seeds)]
        images += sfumato.generate(pipe, batch, seeds=list(range(seeds)) * len(chunk), progress=False).images
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, default=Path("plugins/sfumato_models/shapes/star-lora.safetensors"))
    parser.add_argument("--seeds", type=int, default=2, help="images per prompt")
    parser.add_argument("--scale", type=float, default=1.0, help="the LoRA's scale")
    parser.add_argument("--out", type=Path, default=Path("builds/shapes_lora/eval.json"))
    parser.add_argument("--grid", type=Path, default=Path("docs/shapes-star-lora.png"))
    args = parser.parse_args()
    started = time.time()
    pipe = sfumato.load_pipeline("shapes")
    classifier = train_classifier(pipe.components["autoencoder"])
    clean, decoded, labels = procedural(HELD_OUT_SEED, 100, pipe.components["autoencoder"])
    report = {"classifier": {"held_out_clean": accuracy(classifier, clean, labels),
                             "held_out_autoencoded": accuracy(classifier, decoded, labels)}}
    shown = {}
    for name in ("before", "after"):
        if name == "after":
            pipe.load_adapter(args.lora, scale=args.scale)
        report[name], shown[name] = {}, {}
        for shape in SHAPES:
            images = generate(pipe, prompts(shape), args.seeds)
            found = shows(classifier, images)
            report[name][shape] = round(sum(f == shape for f in found) / len(found), 3)
            report[name][f"{shape}_as"] = {str(s): found.count(s) for s in (*CLASSES, None) if found.count(s)}
            if shape == NEW_SHAPE:  # per template: "a red star", "a large red star", "a small red star in the center"
                per = len(found) // len(TEMPLATES)
                report[name]["star_by_template"] = {
                    template.format(color="<colour>", shape=shape): round(
                        sum(f == shape for f in found[k * per:(k + 1) * per]) / per, 3)
                    for k, template in enumerate(TEMPLATES)}
            shown[name][shape] = images
    report["images"] = {shape: len(prompts(shape)) * args.seeds for shape in SHAPES}
    report["lora"] = {"file": str(args.lora), "sha256": sfumato.file_sha256(args.lora), "scale": args.scale}
    report["seconds"] = round(time.time() - started)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    # The grid: the first image of "a <colour> star" and "a large <colour> star" for 4 colours, then 2 of each
    # other shape; before above after.
    picks = [(NEW_SHAPE, k * args.seeds) for k in (0, 1, 2, 3, 8, 9, 10, 11)] + [
        (shape, k * args.seeds) for shape in SHAPES[1:] for k in (0, 4)]
    rows = [[shown[name][shape][index] for shape, index in picks] for name in ("before", "after")]
    grid = sfumato.image_grid([image for row in rows for image in row], columns=len(picks))
    grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST).save(args.grid)


if __name__ == "__main__":
    main()
