"""Each guidance method's useful range on the built-in ``shapes`` model: a GenEval-style score
(``sfumato_eval``'s shape detector and judge) against the method's scale, and one PNG grid per
method (same prompt and seed, the method off and at each scale).

Run by hand (``OMP_NUM_THREADS=1 python -m benchmarks.guidance_ranges``); it writes
``benchmarks/results/guidance_ranges.json`` and ``docs/guidance-ranges.png``, and the figures go
into docs/guidance.md. A few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from PIL import Image, ImageDraw

import sfumato
from sfumato_eval.geneval import prompt_set
from sfumato_eval.geneval_command import run_geneval

ROOT = Path(__file__).resolve().parent.parent
#: method -> (guidance entries at scale s, the scales measured). ``cfg`` 5 (the model's own) comes
#: first for every method but ``cfg`` itself.
METHODS = {
    "cfg": (lambda s: [{"type": "cfg", "scale": s}], [1.0, 2.0, 3.5, 5.0, 7.5, 12.0]),
    "clip": (lambda s: [{"type": "cfg", "scale": 5.0}, {"type": "clip", "scale": s}], [0.0, 3.0, 10.0, 30.0, 100.0, 500.0]),
    "pag": (lambda s: [{"type": "cfg", "scale": 5.0}, {"type": "pag", "scale": s}], [0.0, 0.5, 1.0, 2.0, 3.0, 6.0]),
    "seg": (lambda s: [{"type": "cfg", "scale": 5.0}, {"type": "seg", "scale": s}], [0.0, 0.5, 1.0, 2.0, 3.0, 6.0]),
}
#: Prompts scored: the first ``PER_TASK`` of each GenEval task.
PER_TASK = 3
GRID_PROMPT, GRID_SEED = "a red circle above a blue square", 11


def prompts() -> list:
    chosen, counts = [], {}
    for prompt in prompt_set():
        if counts.get(prompt.task, 0) < PER_TASK:
            chosen.append(prompt)
            counts[prompt.task] = counts.get(prompt.task, 0) + 1
    return chosen


def label(image: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + 12), "white")
    out.paste(image, (0, 12))
    ImageDraw.Draw(out).text((2, 0), text, fill="black")
    return out


def main() -> None:
    results, rows, chosen = {}, [], prompts()
    for method, (guidance, scales) in METHODS.items():
        results[method], row = [], []
        for scale in scales:
            pipe = sfumato.load_pipeline("shapes", {"guidance": guidance(scale)})
            started = time.perf_counter()
            report, _ = run_geneval(pipe, chosen, images_per_prompt=1 if method == "clip" else 2, seed=0, progress=False)
            results[method].append({"scale": scale, "overall": round(report["overall"], 3),
                                    "tasks": {t: round(v["accuracy"], 3) for t, v in report["tasks"].items()},
                                    "seconds": round(time.perf_counter() - started, 1)})
            print(method, results[method][-1], flush=True)
            image = pipe(GRID_PROMPT, seed=GRID_SEED, progress=False).images[0].resize((128, 128), Image.NEAREST)
            row.append(label(image, f"{method} {scale:g}"))
        rows.append(row)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "guidance_ranges.json").write_text(json.dumps(
        {"prompts": [p.prompt for p in chosen], "results": results}, indent=1))
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * max(map(len, rows)), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image, (c * width, r * height))
    grid.save(ROOT / "docs" / "guidance-ranges.png")


if __name__ == "__main__":
    main()
