"""One PNG grid of every guidance method off and on, on the built-in ``shapes`` model: the same
prompts and seeds, each method's row pairing the image without it ("off") and with it ("on").

- the combiners (``apg``, ``cfg-zero-star``, ``tcfg``) against ``cfg`` at the same scale (``apg``
  at 12, the high scale it is meant for; the others at the model's 5);
- ``perp-neg`` against ``cfg`` 5 with the same negative prompt, "red";
- ``skip-layer``, ``pag`` and ``seg`` after ``cfg`` 5 against ``cfg`` 5 alone, at their defaults
  (``skip-layer`` and the others on the U-Net's middle block).

Run by hand (``OMP_NUM_THREADS=1 python -m benchmarks.guidance_methods``, about a minute on two
CPU cores); it writes ``docs/guidance-methods.png`` and ``benchmarks/results/guidance_methods.json``
(per method: the mean absolute difference off/on in 8-bit levels, and the seconds it took).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import sfumato

ROOT = Path(__file__).resolve().parent.parent
#: (prompt, seed) of each column pair.
PROMPTS = [("a red circle above a blue square", 11), ("a green circle and a red triangle", 3),
           ("a purple square above an orange triangle", 5), ("three triangles", 7)]
CFG = {"type": "cfg", "scale": 5.0}
#: method -> (label off, guidance off, label on, guidance on, negative prompt)
METHODS = {
    "apg": ("cfg 12", [{**CFG, "scale": 12.0}], "apg 12", [{**CFG, "scale": 12.0, "combiner": "apg"}], None),
    "cfg-zero-star": ("cfg 5", [CFG], "cfg-zero* 5", [{**CFG, "combiner": "cfg-zero-star"}], None),
    "tcfg": ("cfg 5", [CFG], "tcfg 5", [{**CFG, "combiner": "tcfg"}], None),
    "perp-neg": ("cfg 5, neg red", [CFG], "perp-neg, neg red", [{**CFG, "combiner": "perp-neg"}], "red"),
    "skip-layer": ("cfg 5", [CFG], "+ skip-layer 2.8", [CFG, {"type": "skip-layer", "layers": ["mid"]}], None),
    "pag": ("cfg 5", [CFG], "+ pag 3", [CFG, {"type": "pag"}], None),
    "seg": ("cfg 5", [CFG], "+ seg 3", [CFG, {"type": "seg"}], None),
}
TILE = 128


def label(image: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (TILE, TILE + 12), "white")
    out.paste(image.resize((TILE, TILE), Image.NEAREST), (0, 12))
    ImageDraw.Draw(out).text((2, 0), text, fill="black")
    return out


def images(guidance: list[dict], negative: str | None) -> list[Image.Image]:
    pipe = sfumato.load_pipeline("shapes", {"guidance": guidance})
    return [pipe(prompt, negative_prompt=negative, seed=seed, progress=False).images[0] for prompt, seed in PROMPTS]


def main() -> None:
    rows, results = [], {}
    for method, (off_label, off, on_label, on, negative) in METHODS.items():
        started = time.perf_counter()
        without, with_ = images(off, negative), images(on, negative)
        difference = np.mean([np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean()
                              for a, b in zip(without, with_)])
        results[method] = {"off": off, "on": on, "negative_prompt": negative,
                           "mean_abs_difference_levels": round(float(difference), 2),
                           "seconds": round(time.perf_counter() - started, 1)}
        print(method, results[method], flush=True)
        rows.append([tile for a, b in zip(without, with_) for tile in (label(a, off_label), label(b, on_label))])
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "guidance_methods.json").write_text(json.dumps(
        {"prompts": PROMPTS, "results": results}, indent=1))
    header = 14
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * len(rows[0]), (height + header) * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (method, row) in enumerate(zip(METHODS, rows)):
        top = r * (height + header)
        draw.text((2, top + 1), f"{method}: " + "   |   ".join(f"{p!r} seed {s}" for p, s in PROMPTS), fill="black")
        for c, image in enumerate(row):
            grid.paste(image, (c * width, top + header))
    grid.save(ROOT / "docs" / "guidance-methods.png")


if __name__ == "__main__":
    main()
