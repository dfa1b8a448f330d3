"""Run outputs on disk: metrics as JSON lines, the loss-curve PNG and sample-grid PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from ..generation import to_pil
from ..outputs import image_grid

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


class MetricsLog:
    """Appends one JSON object per logged step to ``out/metrics.jsonl``.

    On resume, lines written after the checkpoint's step (by the run that was killed) are dropped
    first, so the file reads as one uninterrupted run.
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
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_losses(records: list[dict[str, Any]], path: Path, title: str = "training loss") -> Path | None:
    """Plot ``loss`` (and any other ``loss*`` series) against ``step`` into a PNG (matplotlib, Agg).

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
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
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
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def save_sample_grid(images: Tensor, path: Path, columns: int | None = None) -> Path:
    """``[N, 3, H, W]`` images in [-1, 1] as one PNG grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = to_pil(images.detach().float().cpu())
    image_grid(pictures, columns or min(len(pictures), 8)).save(path)
    return path
