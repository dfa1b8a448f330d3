"""Write the model card's sample grid, docs/shapes-generate.png: one row per prompt, seed 0.

    python -m builds.shapes.samples        # from the repository root
"""

from __future__ import annotations

import sys

import sfumato
from builds.package_model import ROOT

PROMPTS = ["a red circle above a blue square", "three green triangles", "a yellow square",
           "a purple circle to the left of an orange triangle"]


def main() -> int:
    pipe = sfumato.load_pipeline("shapes")
    images = [image for prompt in PROMPTS for image in pipe(prompt, num_images=8, seed=0, progress=False).images]
    grid = sfumato.image_grid(images, columns=8)
    out = ROOT / "docs/shapes-generate.png"
    sfumato.atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))
    print(f"wrote {out} ({', '.join(PROMPTS)}: one row each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
