"""Run outputs on disk: metrics as JSON lines, the loss-curve PNG and sample-grid PNGs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from ..generation import to_pil
from ..outputs import image_grid

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
#: The prefix of held-out evaluation figures (``[train] eval_every``); their lines carry no loss.
EVAL_PREFIX = "eval_"
#: Sample values beyond this magnitude (images live in [-1, 1]) mean the model does not make images,
#: typically a run that diverged; the grid clips them, so ``save_sample_grid`` warns. (A pixel model
#: after its first few steps samples values up to about 5; one diverged early reached 60.)
SAMPLE_RANGE_LIMIT = 10.0


class MetricsLog:
    """Appends one JSON object per logged step to ``out/metrics.jsonl``.

    On resume, lines written after the checkpoint's step (by the run that was killed) are dropped
    first, so the file reads as one uninterrupted run; so is a line the kill cut in half.
    """

    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = out / METRICS_FILE
        out.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.read() if line.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The logged records; a line that is not a JSON object (half-written when a run was killed)
        is left out with a warning naming it."""
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                warnings.warn(f"{self.path}:{number}: not a JSON object (cut off when a run was killed?); "
                              "dropped", stacklevel=2)
        return records


def plot_losses(records: list[dict[str, Any]], path: Path, title: str = "training loss") -> Path | None:
    """Plot ``loss`` (and any other ``loss*`` series) against ``step`` into a PNG (matplotlib, Agg),
    with the held-out ``eval_*`` figures, when there are any, in a panel below on the same steps.

    Returns None when matplotlib is not installed (``pip install sfumato[train]``) or there is
    nothing to plot yet.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = sorted({k for r in records for k in r if k.startswith("loss")})
    evaluations = sorted({k for r in records for k in r if k.startswith(EVAL_PREFIX)})
    if not series:
        return None
    rows = 2 if evaluations else 1
    figure, panels = plt.subplots(rows, 1, figsize=(6, 4 * rows), dpi=100, sharex=True, squeeze=False)
    axes = panels[0][0]
    for name in series:
        points = [(r["step"], r[name]) for r in records if name in r]
        axes.plot([p[0] for p in points], [p[1] for p in points], label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    if all(r[name] > 0 for name in series for r in records if name in r):
        axes.set_yscale("log")
    axes.legend()
    axes.grid(alpha=0.3)
    if evaluations:
        below = panels[1][0]
        for name in evaluations:
            points = [(r["step"], r[name]) for r in records if name in r]
            below.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name[len(EVAL_PREFIX):])
        below.set_xlabel("step")
        below.set_ylabel("held-out")
        below.set_title("held-out evaluation ([train] eval_every)")
        below.legend()
        below.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def save_sample_grid(images: Tensor, path: Path, columns: int | None = None) -> Path:
    """``[N, 3, H, W]`` images in [-1, 1] as one PNG grid; warns when values lie far outside that
    range (or are not finite), which the clipped grid would hide."""
    images = images.detach().float().cpu()
    peak = images.abs().max().item() if images.numel() else 0.0
    if not peak <= SAMPLE_RANGE_LIMIT:  # NaN fails every comparison
        warnings.warn(f"{path}: sample values reach {peak:.3g}, far outside [-1, 1] (the grid clips them): the "
                      f"run may have diverged; check the loss in {METRICS_FILE}, or lower [train] lr", stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = to_pil(images)
    image_grid(pictures, columns or min(len(pictures), 8)).save(path)
    return path
