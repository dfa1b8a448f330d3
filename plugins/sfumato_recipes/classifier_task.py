"""``train-classifier``: a noise-aware classifier for classifier guidance (Dhariwal & Nichol 2021,
https://arxiv.org/abs/2105.05233, section 4): cross-entropy on inputs noised to random timesteps."""

from __future__ import annotations

from typing import Any, Literal

import sfumato
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .batches import require_field
from .latents import check_channels, noised, to_model_space


class ClassifierRecipe(sfumato.Recipe):
    """``CE(classifier(x_t, t), label)`` with ``x_t`` from ``NoiseSchedule.add_noise``."""

    def __init__(self, spec: Any, classifier: nn.Module, schedule: sfumato.NoiseSchedule, autoencoder: nn.Module | None):
        super().__init__({"classifier": classifier}, {"autoencoder": autoencoder} if autoencoder is not None else {})
        self.spec, self.classifier, self.schedule, self.autoencoder = spec, classifier, schedule, autoencoder

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        labels = require_field(batch, "label", self.spec.type)
        x0 = to_model_space(batch["image"], self.autoencoder)
        x_t, _, t = noised(self.schedule, x0, ctx, self.spec.max_timestep)
        logits = self.classifier(x_t, t)  # (B, num_classes)
        loss = F.cross_entropy(logits.float(), labels)
        return loss, {"accuracy": (logits.argmax(dim=1) == labels).float().mean()}


class TrainClassifier(sfumato.TrainingTask):
    """Train ``[classifier]`` on the labels of ``[dataset]``, noised with ``[diffusion]`` (the schedule
    of the denoiser it will guide), on pixels or on the latents of a frozen ``[autoencoder]``."""

    required = ("classifier", "diffusion")

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-classifier"] = "train-classifier"
        max_timestep: int | None = Field(
            None, ge=1, description="Train on timesteps below this only (None: every timestep of [diffusion])."
        )

    def recipe(self, setup: sfumato.TrainSetup) -> ClassifierRecipe:
        classifier = setup.build("classifier")
        autoencoder = setup.build("autoencoder", required=False)
        check_channels(classifier, autoencoder, "classifier")
        schedule = setup.schedule
        if self.spec.max_timestep is not None and self.spec.max_timestep > schedule.num_timesteps:
            raise sfumato.SpecError(f"[task] max_timestep = {self.spec.max_timestep} exceeds [diffusion] timesteps "
                                    f"= {schedule.num_timesteps}")
        return ClassifierRecipe(self.spec, classifier, schedule, autoencoder)
