"""The side-by-side of docs/digits-flow-vs-unet.png: the built-in `digits` (U-Net, VP, DDIM) and
`digits-flow` (DiT, flow matching, Euler) at the same 20 steps, each with its default CFG (3 and 2),
labels 0-9, the same seeds.

    python -m builds.digits.compare_flow      # from the repository root
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

import sfumato

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "digits-flow-vs-unet.png"
SEEDS, SCALE = (0, 1), 4


def row(model: str, seed: int) -> Image.Image:
    pipe = sfumato.load_pipeline(model)
    images = pipe(labels=list(range(10)), seed=seed, steps=20, progress=False).images
    strip = Image.new("RGB", (16 * 10, 16), "white")
    for i, image in enumerate(images):
        strip.paste(image, (16 * i, 0))
    return strip.resize((strip.width * SCALE, strip.height * SCALE), Image.Resampling.NEAREST)


def main() -> None:
    rows = [(f"{model} seed {seed}", row(model, seed)) for model in ("digits", "digits-flow") for seed in SEEDS]
    label_width = 150
    grid = Image.new("RGB", (label_width + rows[0][1].width, sum(r.height for _, r in rows)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (label, strip) in enumerate(rows):
        grid.paste(strip, (label_width, i * strip.height))
        draw.text((6, i * strip.height + strip.height // 2 - 6), label, fill="black")
    grid.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
