"""The training loop: ``sfumato.train(spec)`` runs a ``train-*`` task's recipe.

One optimiser step: ``grad_accumulation`` micro-batches (loss / accumulation, backward under
autocast), gradients averaged over processes, unscaled and clipped, AdamW at the scheduled
learning rate, EMA update. Around it: metrics, sample grids, checkpoints and the final weights,
written by the main process only, which holds the output folder's lock while it trains.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import tomli_w
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import SfumatoError, SpecError
from ..registry import get_registry
from .callbacks import LOGGERS, TrainCallback
from .checkpoint import (
    CheckpointError, architecture_hash, check_architecture, latest_checkpoint, load_checkpoint, save_checkpoint,
)
from .data import KeyedDataset, ResumableSampler, make_loader
from .distributed import (
    DistributedContext, average_gradients, barrier, broadcast_modules, gather_objects, mean_over_processes,
    setup_distributed, teardown_distributed,
)
from .ema import EMA
from .evaluation import EvalContext, held_out_spec
from .lr_schedule import learning_rate
from .metrics import EVAL_PREFIX, LOSS_PLOT, MetricsLog, plot_losses, save_sample_grid
from .randomness import SampleRandom, rng_state, seed_everything, set_rng_state
from .recipe import TABLE_KINDS, Recipe, SampleContext, StepContext, TrainingTask, TrainSetup, build_table
from .run_folder import (
    TRAINED_SPEC, check_run_folder, claim_run_folder, remove_interrupted_writes, remove_run_outputs,
)
from .spec import DEFAULT_STEPS, TrainSpec, effective_train_spec


class DivergenceError(SfumatoError, FloatingPointError):
    """The loss or the gradient norm became NaN or infinite: the run diverged."""


@dataclass
class TrainResult:
    """:param out: the output folder. :param steps: optimiser steps taken in total.
    :param weights: saved weights by module name. :param metrics: the logged records.
    :param resumed_from: the step of the checkpoint the run resumed from (None: a fresh run).
    :param is_main: whether this process is the main one (rank 0), which writes the outputs."""

    out: Path
    steps: int
    weights: dict[str, Path] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    is_main: bool = True


def train(
    spec: Any,
    out: str | Path | None = None,
    resume: bool = False,
    task: TrainingTask | None = None,
    callbacks: Sequence[TrainCallback] = (),
    progress: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train the recipe of ``spec``'s ``train-*`` task.

    :param spec: a validated ``PipelineSpec`` (``sfumato.load_spec`` or ``Pipeline.load(...).spec``).
    :param out: output folder (default: ``[train] out``). A fresh run refuses a folder that holds
        another run's checkpoints or metrics; one run at a time trains into a folder.
    :param resume: continue from the newest checkpoint in ``out`` (start afresh when ``out`` holds
        no run). The checkpoint must come from the same architecture, dataset and batch size (and
        the same total steps with a cosine schedule).
    :param callbacks: extra ``TrainCallback`` objects (main process only).
    :param overwrite: start afresh in a folder that holds another run, deleting that run's outputs.
    """
    if task is None:
        if getattr(spec, "task", None) is None:
            raise SpecError("a training spec needs a task, such as task = \"train-diffusion\"")
        task = get_registry().build("task", spec.task)
    if not isinstance(task, TrainingTask):
        raise SpecError(f"task {spec.task.type!r} is not a training task; training tasks: "
                        f"{', '.join(training_task_types()) or 'none registered'}")
    missing = [t for t in dict.fromkeys(("dataset", *task.required)) if getattr(spec, t, None) is None]
    if missing:
        raise SpecError(f"task {spec.task.type!r} needs the table(s) {', '.join(f'[{m}]' for m in missing)}")
    if spec.runtime.dtype != "float32":
        raise SpecError(f"[runtime] dtype = {spec.runtime.dtype!r}: training keeps float32 weights; "
                        "set [train] precision = \"bfloat16\" (or \"float16\" on CUDA) for mixed precision")
    settings = effective_train_spec(getattr(spec, "train", None), task.train_defaults())
    out = Path(out or settings.out)
    # Before any work; every process reads the same files, and none writes before they all join.
    check_run_folder(out, resume, overwrite)
    context = setup_distributed(spec.runtime.device)
    try:
        trainer = Trainer(spec, task, settings, context, out, callbacks, progress)
        with claim_run_folder(out, resume, overwrite, context):
            return trainer.fit(resume, overwrite)
    finally:
        teardown_distributed(context)


def training_task_types() -> list[str]:
    registry = get_registry()
    return [name for name in registry.types("task") if issubclass(registry.components["task"][name].cls, TrainingTask)]


class Trainer:
    """One training run's state. Use ``sfumato.train``; this class is its implementation."""

    def __init__(self, spec: Any, task: TrainingTask, settings: TrainSpec, context: DistributedContext,
                 out: Path, callbacks: Sequence[TrainCallback], progress: bool | None):
        self.spec, self.task, self.settings, self.context, self.out = spec, task, settings, context, out
        self.device = context.device
        self.show_progress = settings.progress if progress is None else progress
        if settings.precision == "float16" and self.device.type != "cuda":
            raise SpecError(f"[train] precision = \"float16\" needs CUDA (device is {self.device}); "
                            "use \"bfloat16\" on CPU")
        self.callbacks = list(callbacks) + [LOGGERS[name]() for name in settings.loggers] if context.is_main else []

        seed_everything(settings.seed)  # identical initialisation on every process
        dataset = build_table("dataset", spec.dataset)
        self.dataset = dataset
        self.recipe: Recipe = task.recipe(TrainSetup(spec, settings, dataset, self.device))
        for module in self.recipe.trainable.values():
            module.to(self.device).train()
        for module in self.recipe.frozen.values():
            module.to(self.device).eval().requires_grad_(False)
        broadcast_modules(self.recipe.trainable, context)

        world, accumulation = context.world_size, settings.grad_accumulation
        if settings.batch_size % (world * accumulation):
            raise SpecError(f"[train] batch_size = {settings.batch_size} must be divisible by processes ({world}) "
                            f"x grad_accumulation ({accumulation})")
        self.micro_batch = settings.batch_size // (world * accumulation)
        self.held_out = self.held_out_dataset() if settings.eval_every else None
        self.sampler = ResumableSampler(dataset, world, context.rank, settings.seed)
        self.keyed = KeyedDataset(dataset, settings.seed)
        self.steps_per_epoch = self.sampler.num_samples // (self.micro_batch * accumulation)
        if self.steps_per_epoch < 1:
            raise SpecError(f"[dataset] holds {len(dataset)} examples, fewer than one [train] batch_size of "
                            f"{settings.batch_size}; lower batch_size or use more data")
        if settings.steps is not None:
            self.total_steps = settings.steps
        elif settings.epochs is not None:
            self.total_steps = settings.epochs * self.steps_per_epoch
        else:
            self.total_steps = DEFAULT_STEPS

        self.parameters = [p for m in self.recipe.trainable.values() for p in m.parameters() if p.requires_grad]
        if not self.parameters:
            raise SpecError(f"task {spec.task.type!r} has nothing to train: every parameter is frozen")
        decay = [p for p in self.parameters if p.ndim >= 2]
        no_decay = [p for p in self.parameters if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr, betas=settings.betas, eps=settings.eps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if settings.precision == "float16" else None
        self.ema = EMA(self.recipe.trainable, settings.ema_decay) if settings.ema_decay else None
        self.step = 0
        # Metrics summed since the last log line (checkpointed, so a resumed run logs the same means).
        self.metric_sums: dict[str, float] = {}
        self.metric_count = 0
        # Each process draws its own dropout masks (torch's global generator) after the shared init.
        seed_everything(settings.seed + context.rank)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 2,
            "architecture": architecture_hash(self.recipe.trainable),
            "step": self.step,
            "data": {"epoch": self.step // self.steps_per_epoch, "batches": self.step % self.steps_per_epoch,
                     "steps_per_epoch": self.steps_per_epoch, "seed": self.settings.seed},
            "modules": {name: m.state_dict() for name, m in self.recipe.trainable.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "lr_schedule": {"step": self.step, "total_steps": self.total_steps,
                            "lr": learning_rate(max(self.step - 1, 0), self.total_steps, self.settings)},
            "rng": gather_objects(rng_state(), self.context),
            "metrics": {"sums": dict(self.metric_sums), "count": self.metric_count},
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        if state["data"]["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(f"{source}: written with {state['data']['steps_per_epoch']} steps per epoch, "
                                  f"this run has {self.steps_per_epoch}; resume with the same dataset and batch_size")
        check_architecture(state, self.recipe.trainable, source)
        self.check_total_steps(state, source)
        for name, module in self.recipe.trainable.items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        self.metric_sums, self.metric_count = dict(state["metrics"]["sums"]), state["metrics"]["count"]
        states = state["rng"]
        set_rng_state(states[self.context.rank] if self.context.rank < len(states) else states[0])

    def check_total_steps(self, state: dict[str, Any], source: Path) -> None:
        """Refuse to resume past the run's end, or with another total under a cosine schedule (its
        learning rate at every step depends on the total, so the schedule would silently change)."""
        if state["step"] > self.total_steps:
            raise CheckpointError(f"{source}: the checkpoint is at step {state['step']}, past this spec's "
                                  f"{self.total_steps} steps; raise [train] steps to at least {state['step']}")
        recorded = state["lr_schedule"].get("total_steps")
        if self.settings.lr_schedule == "cosine" and recorded is not None and recorded != self.total_steps:
            raise CheckpointError(
                f"{source}: the run was started with {recorded} total steps and this spec trains {self.total_steps} "
                f"([train] steps / epochs); the cosine learning-rate schedule depends on the total, so resuming would "
                f"change it. Resume with [train] steps = {recorded} (or the epochs that make it), or start a new run "
                f"without --resume (--overwrite, or another --out)")

    # -- data --------------------------------------------------------------------------------

    def micro_batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from the current step on, epoch after epoch."""
        per_step = self.settings.grad_accumulation
        epoch, batches = divmod(self.step, self.steps_per_epoch)
        while True:
            self.sampler.set_position(epoch, batches * per_step * self.micro_batch)
            loader = make_loader(self.keyed, self.sampler, self.micro_batch, self.settings.num_workers)
            yield from itertools.islice(loader, (self.steps_per_epoch - batches) * per_step)
            epoch, batches = epoch + 1, 0

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    # -- the loop ----------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.precision == "float32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.precision == "bfloat16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def fit(self, resume: bool, overwrite: bool = False) -> TrainResult:
        checkpoint = latest_checkpoint(self.out) if resume else None
        if checkpoint is not None:
            self.load_state_dict(load_checkpoint(checkpoint), checkpoint)
        resumed_from = self.step if checkpoint is not None else None
        main = self.context.is_main
        if main:
            remove_interrupted_writes(self.out)
            if overwrite:
                remove_run_outputs(self.out, {*TABLE_KINDS, *self.recipe.trainable}, self.recipe.output_files)
        log = MetricsLog(self.out, resumed_from) if main else None
        for callback in self.callbacks:
            callback.on_start(self.out, self.spec.to_dict())
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.show_progress and main),
                   desc=f"training ({self.spec.task.type})", dynamic_ncols=True)
        batches = self.micro_batches()
        while self.step < self.total_steps:
            metrics = self.optimizer_step(batches)
            for key, value in metrics.items():
                self.metric_sums[key] = self.metric_sums.get(key, 0.0) + float(value)
            self.metric_count += 1
            self.step += 1
            bar.update(1)
            if self.step % self.settings.log_every == 0 or self.step == self.total_steps:
                sums, counted = self.metric_sums, self.metric_count
                record = mean_over_processes({k: v / counted for k, v in sums.items() if k != "lr"}, self.context)
                record["lr"] = sums["lr"] / counted
                record = {"step": self.step, "epoch": self.step / self.steps_per_epoch, **record}
                self.metric_sums, self.metric_count = {}, 0
                if main:
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                    for callback in self.callbacks:
                        callback.on_log(self.step, record)
            if self.settings.save_every_epoch and self.step % self.steps_per_epoch == 0:
                self.save_weights(self.out / f"epoch-{self.step // self.steps_per_epoch}")
            if self.settings.sample_every and (self.step % self.settings.sample_every == 0 or self.step == self.total_steps):
                self.write_samples()
            eval_every = self.settings.eval_every
            if eval_every and (self.step % eval_every == 0 or self.step == self.total_steps):
                self.evaluate(log)
            if self.settings.checkpoint_every and (self.step % self.settings.checkpoint_every == 0 or self.step == self.total_steps):
                state = self.state_dict()
                if main:
                    save_checkpoint(self.out, self.step, state, self.settings.keep_checkpoints)
                    plot_losses(log.read(), self.out / LOSS_PLOT, f"{self.spec.task.type} loss")
            for callback in self.callbacks:
                callback.on_step_end(self.step)
        bar.close()
        weights = self.save_weights(self.out)
        if main:
            self.write_trained_spec(weights)
            plot_losses(log.read(), self.out / LOSS_PLOT, f"{self.spec.task.type} loss")
        for callback in self.callbacks:
            callback.on_end(self.out)
        barrier(self.context)
        return TrainResult(self.out, self.step, weights, log.read() if log else [], resumed_from, main)

    def optimizer_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, Tensor]:
        accumulation = self.settings.grad_accumulation
        lr = learning_rate(self.step, self.total_steps, self.settings)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, Tensor] = {}
        for _ in range(accumulation):
            batch = next(batches)
            random = SampleRandom(self.settings.seed, batch["epoch"].tolist(), batch["index"].tolist(), self.device)
            batch = self.to_device(batch)
            with self.autocast():
                output = self.recipe.loss(batch, StepContext(self.step, random, self.device))
            loss, extra = output if isinstance(output, tuple) else (output, {})
            if not torch.isfinite(loss.detach()):
                raise DivergenceError(f"training diverged at step {self.step + 1}: the loss of task "
                                      f"{self.spec.task.type!r} is {loss.item()}; lower [train] lr (now {lr:g}) "
                                      "or check the data")
            scaled = loss.float() / accumulation
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for key, value in {"loss": loss, **extra}.items():
                value = value.detach().float() if isinstance(value, Tensor) else torch.tensor(float(value))
                totals[key] = totals.get(key, 0.0) + value.cpu() / accumulation
        average_gradients(self.parameters, self.context)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.settings.grad_clip is not None:
            totals["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.grad_clip).detach().cpu()
            if self.scaler is None and not torch.isfinite(totals["grad_norm"]):  # a scaler skips such steps itself
                raise DivergenceError(f"training diverged at step {self.step + 1}: the gradient norm of task "
                                      f"{self.spec.task.type!r} is {totals['grad_norm'].item()}; lower [train] lr "
                                      f"(now {lr:g}) or check the data")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        totals["lr"] = torch.tensor(lr, dtype=torch.float64)
        return totals

    # -- outputs -----------------------------------------------------------------------------

    def write_samples(self) -> None:
        if not self.context.is_main:
            return
        context = SampleContext(self.step, self.settings.sample_count, self.device,
                                torch.Generator().manual_seed(self.settings.seed), self.dataset)
        modes = {name: m.training for name, m in self.recipe.trainable.items()}
        for module in self.recipe.trainable.values():
            module.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]), (self.ema.applied() if self.ema else contextlib.nullcontext()):
                images = self.recipe.sample(context)
        finally:
            for name, module in self.recipe.trainable.items():
                module.train(modes[name])
        if images is not None:
            path = save_sample_grid(images, self.out / "samples" / f"step-{self.step:08d}.png")
            for callback in self.callbacks:
                callback.on_samples(self.step, images, path)

    def held_out_dataset(self) -> Any:
        """The held-out ``[dataset]`` of ``[train] eval_every`` (``held_out_spec``), built once on
        the main process; a recipe without ``evaluate`` is refused before training starts."""
        if not self.recipe.can_evaluate:
            raise SpecError(f"[train] eval_every = {self.settings.eval_every}: task {self.spec.task.type!r} has no "
                            "held-out evaluation (its recipe does not implement Recipe.evaluate); set eval_every = 0")
        if not self.context.is_main:
            return None
        with torch.random.fork_rng(devices=[]):
            return build_table("dataset", held_out_spec(self.spec.dataset))

    def evaluate(self, log: MetricsLog | None) -> None:
        """``recipe.evaluate`` on the held-out set, written as an ``eval_*`` line of the metrics log.
        Evaluating leaves training as it was: modes restored, RNG states restored, no gradients."""
        if self.context.is_main:
            context = EvalContext(self.step, self.device, self.held_out,
                                  min(self.settings.eval_size, len(self.held_out)), self.micro_batch)
            modes = {name: m.training for name, m in self.recipe.trainable.items()}
            for module in self.recipe.trainable.values():
                module.eval()
            random_state = rng_state()
            try:
                with torch.no_grad(), (self.ema.applied() if self.ema else contextlib.nullcontext()):
                    figures = self.recipe.evaluate(context)
            finally:
                set_rng_state(random_state)
                for name, module in self.recipe.trainable.items():
                    module.train(modes[name])
            record = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                      **{f"{EVAL_PREFIX}{name}": float(value) for name, value in figures.items()}}
            log.write(record)
            for callback in self.callbacks:
                callback.on_log(self.step, record)
        barrier(self.context)

    def save_weights(self, folder: Path) -> dict[str, Path]:
        """The trained modules (the EMA's weights when there is one; the raw ones beside them)."""
        saved: dict[str, Path] = {}
        if self.context.is_main:
            if self.ema is not None:
                self.recipe.save(folder, suffix=".no-ema")
                with self.ema.applied():
                    saved = self.recipe.save(folder)
            else:
                saved = self.recipe.save(folder)
        barrier(self.context)
        return saved

    def write_trained_spec(self, weights: dict[str, Path]) -> Path:
        """``out/trained.toml``: the run's spec without its task and [train] table, with every trained
        component table pointing at its new weights; add a task and a [scheduler] to use it."""
        data = self.spec.to_dict()
        for key in ("task", "train"):
            data.pop(key, None)
        for name, path in weights.items():
            module = self.recipe.trainable[name]
            if name in data and hasattr(module, "spec") and "weights" in type(module.spec).model_fields:
                table = module.spec.model_dump(mode="json", exclude_none=True)
                table["weights"] = path.name
                data[name] = table
        path = self.out / TRAINED_SPEC
        path.write_text(tomli_w.dumps(data))
        return path
