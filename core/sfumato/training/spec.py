"""The ``[train]`` table: how the harness trains (never what: that is the task's table)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..component import SPEC_TABLE_CONFIG

#: Steps a run takes when the spec sets neither ``steps`` nor ``epochs``.
DEFAULT_STEPS = 1000


class TrainSpec(BaseModel):
    """Optimisation, precision, data-parallel and output settings of a training run.

    ``batch_size`` is the global batch of one optimiser step: it is split over the processes of a
    ``torchrun`` launch and over ``grad_accumulation`` micro-batches, so the same spec trains the
    same model on one process or several.
    """

    model_config = SPEC_TABLE_CONFIG

    steps: int | None = Field(None, ge=1, description="Optimiser steps to train for (set this or epochs; "
                              f"neither: {DEFAULT_STEPS}).")
    epochs: int | None = Field(None, ge=1, description="Passes over the dataset (set this or steps).")
    batch_size: int = Field(32, ge=1, description="Examples per optimiser step, over all processes.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches per optimiser step (each process).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After warm-up: keep lr, or follow a half cosine down to min_lr at the last step."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from lr / warmup_steps to lr over these steps.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of a cosine schedule.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay (not applied to biases "
                                "and normalisation weights, i.e. parameters with fewer than 2 dimensions).")
    betas: tuple[float, float] = Field((0.9, 0.999), strict=False, description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this; None: no clipping.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the trained weights with this decay "
        "(0.999 or 0.9999 for diffusion); None: no EMA. The final weights are the EMA's when it is on."
    )
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Autocast precision of forward passes (weights stay float32). float16 uses a "
        "gradient scaler and needs CUDA; bfloat16 works on CPU and recent GPUs."
    )
    seed: int = Field(0, ge=0, description="Seed of initialisation, data order, augmentation and training noise.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per training process.")
    out: str = Field("runs/train", description="Output folder (the CLI's --out replaces it).")
    log_every: int = Field(10, ge=1, description="Write a metrics line every this many steps.")
    checkpoint_every: int = Field(500, ge=0, description="Write a resumable checkpoint every this many steps; 0: never.")
    keep_checkpoints: int = Field(2, ge=1, description="Most recent checkpoints to keep.")
    sample_every: int = Field(0, ge=0, description="Write a PNG grid of samples every this many steps (and at the "
                              "end); 0: never. Recipes without a sampler ignore it.")
    sample_count: int = Field(8, ge=1, description="Images in each sample grid.")
    eval_every: int = Field(0, ge=0, description="Evaluate the task on the held-out split of [dataset] every this "
                            "many steps and at the end (Recipe.evaluate: zero-shot accuracy, retrieval recall, ...), "
                            "written to metrics.jsonl as eval_* and plotted under the loss; 0: never.")
    eval_size: int = Field(1000, ge=1, description="Held-out examples each evaluation reads (the first N).")
    save_every_epoch: bool = Field(False, description="Also save the trained weights at the end of each epoch "
                                   "(in out/epoch-N/).")
    progress: bool = Field(True, description="Show a tqdm progress bar (on the first process).")
    loggers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Also send metrics to these (each needs its package installed)."
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"set steps or epochs, not both (got steps = {self.steps}, epochs = {self.epochs})")
        if self.batch_size % self.grad_accumulation:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accumulation "
                             f"{self.grad_accumulation}")
        return self


def effective_train_spec(given: TrainSpec | None, defaults: dict[str, Any]) -> TrainSpec:
    """The task's ``defaults`` under the fields the spec file set explicitly.

    A file that sets ``steps`` or ``epochs`` overrides both of a task's defaults (they are one choice).
    """
    explicit = given.model_dump(include=given.model_fields_set) if given is not None else {}
    merged = dict(defaults)
    if "steps" in explicit or "epochs" in explicit:
        merged.pop("steps", None)
        merged.pop("epochs", None)
    merged.update(explicit)
    return TrainSpec.model_validate(merged)
