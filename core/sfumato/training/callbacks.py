"""The trainer's callback protocol, and the TensorBoard and Weights & Biases loggers built on it.

Callbacks run on the main process only (rank 0). Neither logger is required: each imports its
package when it is created and says how to install it when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import SpecError


class TrainCallback:
    """Override the hooks you need; each default does nothing.

    ``on_start(out, config)`` once before the first step (``config`` is the resolved spec as a
    dict); ``on_log(step, metrics)`` at every ``log_every``; ``on_samples(step, images, path)``
    after a sample grid is written (``images [N, 3, H, W]`` in [-1, 1]); ``on_step_end(step)``
    after every optimiser step; ``on_end(out)`` after the final weights are saved.
    """

    def on_start(self, out: Path, config: dict[str, Any]) -> None: ...

    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_samples(self, step: int, images: Tensor, path: Path) -> None: ...

    def on_step_end(self, step: int) -> None: ...

    def on_end(self, out: Path) -> None: ...


class TensorBoardLogger(TrainCallback):
    """Scalars and sample grids to ``out/tensorboard`` (``pip install tensorboard``)."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise SpecError("[train] loggers = ['tensorboard'] needs TensorBoard: pip install tensorboard") from exc
        self._writer_cls = SummaryWriter
        self.writer: Any = None

    def on_start(self, out: Path, config: dict[str, Any]) -> None:
        self.writer = self._writer_cls(log_dir=str(out / "tensorboard"))

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "step":
                self.writer.add_scalar(key, value, step)

    def on_samples(self, step: int, images: Tensor, path: Path) -> None:
        self.writer.add_images("samples", (images.float().clamp(-1, 1) + 1) / 2, step)

    def on_end(self, out: Path) -> None:
        self.writer.close()


class WandbLogger(TrainCallback):
    """Metrics and sample grids to Weights & Biases (``pip install wandb``; ``WANDB_*`` variables
    choose the project and mode)."""

    def __init__(self) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise SpecError("[train] loggers = ['wandb'] needs Weights & Biases: pip install wandb") from exc
        self.wandb = wandb
        self.run: Any = None

    def on_start(self, out: Path, config: dict[str, Any]) -> None:
        self.run = self.wandb.init(dir=str(out), config=config, resume="allow")

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step)

    def on_samples(self, step: int, images: Tensor, path: Path) -> None:
        self.run.log({"samples": self.wandb.Image(str(path))}, step=step)

    def on_end(self, out: Path) -> None:
        self.run.finish()


LOGGERS: dict[str, type[TrainCallback]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
