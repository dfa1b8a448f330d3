"""Write the folder the LoRA trains on: ``runs/shapes-lora/stars/`` with 64 px PNGs and a
``metadata.jsonl`` (the ``imagefolder`` layout), one caption per image drawn from the scene's
captions ("a small red star on the left", "a red star", "a star", "two blue stars").

``--known N`` adds N scenes of the shapes the model already draws (circles, squares, triangles,
drawn and captioned the same way), a replay set against forgetting. The shipped LoRA is trained
without it: with 150 of them the LoRA kept the known shapes but drew splats for "star" under
CFG 5 (``eval-with-known-shapes.json``; docs/adapters.md).

    python -m builds.shapes_lora.make_data [--count 150] [--known 0] [--out runs/shapes-lora/stars]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .stars import NEW_SHAPE, VOCABULARY, draw, scene

#: Seeds of the star scenes and of the known shapes' scenes (evaluation uses others: evaluate.py).
SEED, KNOWN_SEED = 11, 12


def write_folder(out: Path, count: int, known: int = 0, seed: int = SEED) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    scenes = [(f"star-{i:04d}.png", seed, i, NEW_SHAPE) for i in range(count)]
    scenes += [(f"known-{i:04d}.png", KNOWN_SEED, i, VOCABULARY.SHAPES[i % len(VOCABULARY.SHAPES)]) for i in range(known)]
    for name, scene_seed, index, shape in scenes:
        objects, captions = scene(scene_seed, index, shape)
        caption = captions[int(np.random.default_rng([scene_seed, index, 1]).integers(len(captions)))]
        draw(objects).save(out / name)
        rows.append({"file_name": name, "text": caption})
    (out / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150, help="star scenes")
    parser.add_argument("--known", type=int, default=0, help="scenes of circles, squares and triangles")
    parser.add_argument("--out", type=Path, default=Path("runs/shapes-lora/stars"))
    args = parser.parse_args()
    print(write_folder(args.out, args.count, args.known))


if __name__ == "__main__":
    main()
