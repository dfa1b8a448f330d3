"""What a training task hands the harness: a ``Recipe`` (modules, a loss, optional samples), built
from a ``TrainSetup``; and ``TrainingTask``, the base of the ``train-*`` task types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..component import Component
from ..errors import PluginError, SfumatoError, SpecError
from ..interfaces import Task
from ..formulation import Formulation
from ..registry import get_registry
from ..weights import save_component, save_weights
from .data import collate_examples, label_table_error
from .evaluation import EvalContext
from .randomness import SampleRandom
from .spec import TrainSpec

if TYPE_CHECKING:
    from .trainer import TrainResult

#: Spec tables a training spec may hold, and the kind each one builds.
TABLE_KINDS = {
    "text_encoder": "encoder", "image_encoder": "encoder", "autoencoder": "autoencoder",
    "denoiser": "denoiser", "classifier": "classifier", "scheduler": "scheduler", "dataset": "dataset",
    "diffusion": "formulation",
}


@dataclass
class TrainSetup:
    """What a training task builds its recipe from.

    :param spec: the validated pipeline spec (``spec.task`` is the task's own table).
    :param settings: the effective ``[train]`` table (task defaults under the file's values).
    :param dataset: the built ``[dataset]``.
    :param device: this process's device.
    """

    spec: Any
    settings: TrainSpec
    dataset: torch.utils.data.Dataset
    device: torch.device

    def build(self, table: str, required: bool = True, **context: Any) -> Any:
        """Build the component of spec table ``table`` (None when absent and not ``required``).

        Errors a plugin raises on purpose (a missing file, a corrupt image) come back with their
        own type and message, prefixed with the table they came from.
        """
        table_spec = getattr(self.spec, table, None)
        if table_spec is None:
            if required:
                raise SpecError(f"task {self.spec.task.type!r} needs a [{table}] table")
            return None
        return build_table(table, table_spec, **context)

    @property
    def schedule(self) -> Formulation:
        """The ``[diffusion]`` formulation (a SpecError when the spec has none)."""
        if getattr(self.spec, "diffusion", None) is None:
            raise SpecError(f"task {self.spec.task.type!r} needs a [diffusion] table (the noise schedule to train with)")
        return self.build("diffusion")


def build_table(table: str, table_spec: Any, **context: Any) -> Any:
    """``registry.build`` for one spec table, with deliberate plugin errors surfaced unchanged."""
    try:
        return get_registry().build(TABLE_KINDS.get(table, table), table_spec, **context)
    except PluginError as exc:
        cause = exc.__cause__
        if isinstance(cause, SfumatoError):
            raise label_table_error(cause, table, table_spec.type) from None
        raise label_table_error(exc, table, None) from exc
    except SfumatoError as exc:
        raise label_table_error(exc, table, getattr(table_spec, "type", None))


@dataclass
class StepContext:
    """What ``Recipe.loss`` gets besides the batch.

    :param step: the optimiser step being computed (0-based).
    :param random: per-sample random numbers (noise, timesteps, dropout masks); use these, not
        torch's global generator, so runs resume exactly and match across process counts.
    """

    step: int
    random: SampleRandom
    device: torch.device


@dataclass
class SampleContext:
    """What ``Recipe.sample`` gets: the step, how many images to make, a seeded CPU generator and
    ``examples(n)``, the first ``n`` dataset items as a batch on the device (for reconstructions)."""

    step: int
    count: int
    device: torch.device
    generator: torch.Generator
    dataset: torch.utils.data.Dataset = field(repr=False)

    def examples(self, n: int | None = None) -> dict[str, Any]:
        n = min(n or self.count, len(self.dataset))  # type: ignore[arg-type]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            batch = collate_examples([dict(self.dataset[i]) for i in range(n)])
        return {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Recipe:
    """The modules a run trains and how: ``loss`` over a batch, ``sample`` for preview grids.

    :param trainable: modules the optimiser updates, by name (a spec table name for components,
        so the saved weights can be pointed at from that table).
    :param frozen: modules the loss uses but does not train (a text encoder, an autoencoder):
        moved to the device, put in eval mode, gradients off.
    """

    #: Files ``save`` writes besides ``<trainable name>.safetensors``, by name, ``{suffix}`` standing
    #: for ``""`` and ``".no-ema"`` (``"lora{suffix}.kohya.safetensors"``): ``--overwrite`` deletes
    #: them with the earlier run's other outputs, so none of them is left from another run.
    output_files: tuple[str, ...] = ()

    def __init__(self, trainable: dict[str, nn.Module], frozen: dict[str, nn.Module] | None = None):
        self.trainable = trainable
        self.frozen = frozen or {}

    def loss(self, batch: dict[str, Any], ctx: StepContext) -> Tensor | tuple[Tensor, dict[str, Tensor | float]]:
        """The scalar loss of ``batch`` (a mean over its samples), optionally with extra metrics
        (the same names at every step: processes average them together)."""
        raise NotImplementedError

    def sample(self, ctx: SampleContext) -> Tensor | None:
        """``[N, 3, H, W]`` images in [-1, 1] showing progress, or None (no grid)."""
        return None

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Named figures on the held-out examples ``ctx.examples()`` (higher or lower is better as
        the name says: ``zero_shot_top1``, ``image_to_text_r1``); the trainer calls it every
        ``[train] eval_every`` steps, without gradients, the modules in eval mode, the random
        generators forked (``evaluation.py``). A recipe that can evaluate overrides it; the
        default has nothing to report, and ``eval_every`` is refused for its task."""
        return {}

    @property
    def can_evaluate(self) -> bool:
        """Whether this recipe overrides ``evaluate``."""
        return type(self).evaluate is not Recipe.evaluate

    def save(self, out: Path, suffix: str = "") -> dict[str, Path]:
        """Save each trained module to ``out/<name><suffix>.safetensors``: components with
        ``sfumato.save_component`` (the spec travels in the metadata), other modules as plain
        safetensors."""
        saved = {}
        for name, module in self.trainable.items():
            path = out / f"{name}{suffix}.safetensors"
            if isinstance(module, Component):
                saved[name] = save_component(module, path)
            else:
                saved[name] = save_weights(module.state_dict(), path, {"sfumato.module": name})
        return saved


class TrainingTask(Task):
    """Base of the ``train-*`` tasks: ``recipe(setup)`` builds what to train; ``run`` trains it.

    ``train_defaults()`` are ``[train]`` values for this task that a spec file's own values override
    (CLIP fine-tuning on CIFAR-10 defaults to 5 epochs of batch 16, for example).
    """

    #: Tables besides ``[dataset]`` (which every training task needs; the harness checks it).
    required: ClassVar[tuple[str, ...]] = ()

    def train_defaults(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def recipe(self, setup: TrainSetup) -> Recipe:
        """Build the modules to train (with ``setup.build(table)``) and return the recipe."""

    def run(self, pipeline: Any, out: str | Path | None = None, resume: bool = False, **kwargs: Any) -> TrainResult:
        """Train from a validated spec (or a ``Pipeline``'s spec); see ``sfumato.train``."""
        from .trainer import train

        spec = pipeline.spec if hasattr(pipeline, "components") else pipeline
        return train(spec, out=out, resume=resume, task=self, **kwargs)
