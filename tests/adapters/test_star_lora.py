"""The example LoRA shipped with the ``shapes`` model (``star-lora.safetensors``, built by
``builds/shapes_lora``): it loads, changes what the model draws, and the figures docs/adapters.md
gives are the ones its evaluation script recorded for this very file (the script re-measures;
this test only checks that the docs, the record and the file agree)."""

from __future__ import annotations

import json
from pathlib import Path

import sfumato

ROOT = Path(__file__).parents[2]
LORA = Path(sfumato.get_registry().model("shapes").spec_path).parent / "star-lora.safetensors"
RECORD = ROOT / "builds" / "shapes_lora" / "eval.json"
DOC = ROOT / "docs" / "adapters.md"


def test_the_star_lora_changes_what_shapes_draws():
    pipe = sfumato.load_pipeline("shapes")
    before = sfumato.generate(pipe, "a large red star", seed=0, steps=8, progress=False)
    pipe.load_adapter(LORA)
    after = sfumato.generate(pipe, "a large red star", seed=0, steps=8, progress=False)
    assert (after.decoded - before.decoded).abs().mean() > 0.01
    assert {layer.component for layer in pipe.adapters[0].layers} == {"unet", "text_encoder"}


def test_the_docs_give_the_figures_the_script_recorded_for_the_shipped_file():
    record = json.loads(RECORD.read_text())
    assert record["lora"]["sha256"] == sfumato.file_sha256(LORA)
    doc = DOC.read_text().split("### Example: teaching `shapes` a star")[1].split("\n## ")[0]
    for shape in ("star", "circle", "square", "triangle"):
        row = next(line for line in doc.splitlines() if line.startswith(f"| {shape}"))
        assert f"{record['before'][shape]:.3f}" in row and f"{record['after'][shape]:.3f}" in row, row
    for split in ("held_out_clean", "held_out_autoencoded"):
        assert f"{record['classifier'][split]['star']:.2f}" in doc
    assert (ROOT / "docs" / "shapes-star-lora.png").is_file()
