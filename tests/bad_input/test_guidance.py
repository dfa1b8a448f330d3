"""Bad guidance options: a ``[[guidance]]`` table's combiner (name, table, fields) and the model
patches of PAG, SEG and skip-layer guidance (layers no point matches, fields out of range) exit 2
naming the ``[[guidance]]`` table and field, through ``validate`` and ``generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from bad_input.harness import Case, check
from bad_input.test_specs import TINY

#: TINY (a class-conditional pixel U-Net, CFG 2), allowed to run untrained.
RUNNABLE = TINY + "\n[runtime]\nallow_untrained = true\n"
GENERATE = ["generate", "--label", "1", "--out", "out.png", "--no-progress", "--spec", "spec.toml"]


def cfg_with(lines: str, extra: str = "") -> Callable[[Path], None]:
    """``spec.toml``: RUNNABLE with ``lines`` added to its ``[[guidance]] cfg`` table and ``extra`` appended."""

    def setup(root: Path) -> None:
        (root / "spec.toml").write_text(RUNNABLE.replace("scale = 2.0\n", f"scale = 2.0\n{lines}\n") + extra)

    return setup


def then(table: str, spec: str = RUNNABLE) -> Callable[[Path], None]:
    """``spec.toml``: ``spec`` with a second ``[[guidance]]`` table of the lines ``table``."""

    def setup(root: Path) -> None:
        (root / "spec.toml").write_text(spec + f"\n[[guidance]]\n{table}\n")

    return setup


#: RUNNABLE with self-attention at the U-Net's second level (its points: down_blocks.1.attentions.0, ...).
WITH_ATTENTION = RUNNABLE.replace("attention = [false, false]", "attention = [false, true]")

CASES = [
    # -- the combiner of classifier-free guidance ------------------------------------------------
    Case("combiner-unknown", ["validate", "spec.toml"],
         ["spec.toml", "[[guidance]] #1 combiner", "unknown combiner 'apgg'", "did you mean 'apg'"],
         cfg_with('combiner = "apgg"')),
    Case("combiner-unknown-by-set", ["validate", "spec.toml", "--set", "guidance.0.combiner=apgg"],
         ["--set guidance.0.combiner=apgg", "[[guidance]] #1 combiner", "unknown combiner 'apgg'"], cfg_with("")),
    Case("combiner-field-not-a-number", ["validate", "spec.toml"],
         ["[[guidance]] #1 combiner", "combiner 'apg'", "eta", "valid number"],
         cfg_with('combiner = { type = "apg", eta = "high" }')),
    Case("combiner-field-out-of-range", ["validate", "spec.toml"],
         ["[[guidance]] #1 combiner", "combiner 'apg'", "norm_threshold", "greater than or equal to 0"],
         cfg_with('combiner = { type = "apg", norm_threshold = -1.0 }')),
    Case("combiner-unknown-field", ["validate", "spec.toml"],
         ["[[guidance]] #1 combiner", "combiner 'apg'", "etaa", "unknown field"],
         cfg_with('combiner = { type = "apg", etaa = 0.0 }')),
    Case("combiner-table-without-type", ["validate", "spec.toml"],
         ["[[guidance]] #1 combiner", "needs a type", "'apg'"], cfg_with("combiner = { eta = 1.0 }")),
    Case("combiner-a-number", ["validate", "spec.toml"],
         ["[[guidance]] #1 combiner", "a name or a table", "got 3"], cfg_with("combiner = 3")),
    Case("combiner-zero-init-negative", ["generate", *GENERATE[1:]],
         ["[[guidance]] #1 combiner", "'cfg-zero-star'", "zero_init_steps", "greater than or equal to 0"],
         cfg_with('combiner = { type = "cfg-zero-star", zero_init_steps = -1 }')),
    Case("perp-neg-without-text-encoder", GENERATE,
         ["[[guidance]] cfg combiner 'perp-neg'", "[text_encoder]"], cfg_with('combiner = "perp-neg"')),
    # -- guidance by a perturbed model: pag, seg, skip-layer -------------------------------------
    Case("pag-layer-not-a-regex", ["validate", "spec.toml"],
         ["[[guidance]] #2 layers", "'mid('", "not a regular expression"], then('type = "pag"\nlayers = ["mid("]')),
    Case("pag-no-layers", ["validate", "spec.toml"], ["[[guidance]] #2 layers", "at least 1"],
         then('type = "pag"\nlayers = []')),
    Case("pag-start-out-of-range", ["validate", "spec.toml"], ["[[guidance]] #2 start", "less than or equal to 1"],
         then('type = "pag"\nstart = 1.5')),
    Case("skip-layer-window-reversed", ["validate", "spec.toml"], ["[[guidance]] #2", "start 0.5 is after stop 0.2"],
         then('type = "skip-layer"\nlayers = ["mid"]\nstart = 0.5\nstop = 0.2')),
    Case("skip-layer-without-layers", ["validate", "spec.toml"], ["[[guidance]] #2 layers", "required"],
         then('type = "skip-layer"')),
    Case("seg-blur-zero", ["validate", "spec.toml"], ["[[guidance]] #2 blur_sigma", "greater than 0"],
         then('type = "seg"\nblur_sigma = 0.0')),
    Case("pag-layer-matches-no-point", GENERATE,
         ["[[guidance]] pag layers", "'middle' matches no self-attention point", "down_blocks.1.attentions.0"],
         then('type = "pag"\nlayers = ["middle"]', WITH_ATTENTION)),
    Case("pag-on-a-denoiser-without-points", GENERATE,
         ["[[guidance]] pag layers", "'mid' matches no self-attention point", "advertises no such points"],
         then('type = "pag"')),
    Case("skip-layer-on-a-denoiser-without-blocks", GENERATE,
         ["[[guidance]] skip-layer layers", "no block point", "advertises no such points"],
         then('type = "skip-layer"\nlayers = ["mid"]', WITH_ATTENTION)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_guidance_input_exits_2_naming_it(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)
