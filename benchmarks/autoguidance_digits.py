"""Autoguidance (Karras et al. 2024) on the built-in ``digits`` U-Net, guided away from a weak
version of itself: the same architecture trained for only a few steps (``WEAK`` steps of
``builds/digits/unet.toml``; the run takes a few minutes on two CPU cores, then pass its
``denoiser.safetensors``).

Run by hand: ``OMP_NUM_THREADS=1 python -m benchmarks.autoguidance_digits WEAK.safetensors``. It
writes ``benchmarks/results/autoguidance_digits.json`` (class accuracy and Frechet distance of
``sfumato eval digits`` per setting) and ``docs/autoguidance-digits.png`` (one row per setting,
digits 0-9, the same seeds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

import sfumato
from sfumato_eval.digits import evaluate_digits, generate_digits

ROOT = Path(__file__).resolve().parent.parent
PER_CLASS = 20


def settings(weak: str) -> dict[str, list[dict]]:
    return {
        "unguided (cfg 1)": [{"type": "cfg", "scale": 1.0}],
        "cfg 3 (the model's)": [{"type": "cfg", "scale": 3.0}],
        "autoguidance 2": [{"type": "autoguidance", "scale": 2.0, "weights": weak}],
        "autoguidance 3": [{"type": "autoguidance", "scale": 3.0, "weights": weak}],
        "cfg 3 + autoguidance 2": [{"type": "cfg", "scale": 3.0},
                                   {"type": "autoguidance", "scale": 2.0, "weights": weak}],
    }


def main(weak: str) -> None:
    results, rows = {}, []
    for name, guidance in settings(str(Path(weak).resolve())).items():
        pipe = sfumato.load_pipeline("digits", {"guidance": guidance})
        started = time.perf_counter()
        images, labels = generate_digits(pipe, PER_CLASS, seed=0, progress=False)
        report = evaluate_digits(images, labels)
        results[name] = {"accuracy": round(report["accuracy"], 3), "frechet_distance": round(report["frechet_distance"], 2),
                         "seconds": round(time.perf_counter() - started, 1)}
        print(name, results[name], flush=True)
        row = sfumato.to_pil(images[::PER_CLASS])  # the first image of each digit
        strip = Image.new("RGB", (10 * 48 + 150, 48), "white")
        ImageDraw.Draw(strip).text((2, 18), name, fill="black")
        for c, image in enumerate(row):
            strip.paste(image.resize((48, 48), Image.NEAREST), (150 + 48 * c, 0))
        rows.append(strip)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "autoguidance_digits.json").write_text(json.dumps(results, indent=1))
    grid = Image.new("RGB", (rows[0].width, 48 * len(rows)), "white")
    for r, strip in enumerate(rows):
        grid.paste(strip, (0, 48 * r))
    grid.save(ROOT / "docs" / "autoguidance-digits.png")


if __name__ == "__main__":
    main(sys.argv[1])
