"""``train-diffusion``: a denoiser on pixels or a frozen autoencoder's latents, unconditional,
class-conditional or text-conditional, with condition dropout for classifier-free guidance."""

from __future__ import annotations

from typing import Any, Literal

import sfumato
import torch
from pydantic import Field
from torch import Tensor, nn

from .batches import require_field
from .latents import check_channels, noised, to_model_space


def min_snr_weight(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556, eq. 8),
    written for the parameterisation the network predicts: the x0-space weight ``min(SNR, gamma)``
    becomes ``min(SNR, gamma) / SNR`` for epsilon and ``min(SNR, gamma) / (SNR + 1)`` for v."""
    clipped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        return (gamma / snr).clamp(max=1.0)  # = min(SNR, gamma) / SNR, and 1 where SNR = 0
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


class DiffusionRecipe(sfumato.Recipe):
    """The denoising loss ``w(t) * |f(x_t, t, c) - target|^2`` of the ``[diffusion]`` formulation:
    its training timesteps, network input, target (epsilon, v or x0 for VP; the velocity for flow
    matching; EDM's preconditioned F) and loss weight."""

    def __init__(self, spec: Any, denoiser: nn.Module, schedule: sfumato.Formulation,
                 autoencoder: nn.Module | None, text_encoder: nn.Module | None, num_classes: int | None,
                 scheduler: sfumato.Scheduler | None):
        trainable: dict[str, nn.Module] = {"denoiser": denoiser}
        frozen: dict[str, nn.Module] = {"autoencoder": autoencoder} if autoencoder is not None else {}
        if text_encoder is not None:
            (trainable if spec.train_text_encoder else frozen)["text_encoder"] = text_encoder
        super().__init__(trainable, frozen)
        self.spec, self.denoiser, self.schedule = spec, denoiser, schedule
        self.autoencoder, self.text_encoder, self.num_classes = autoencoder, text_encoder, num_classes
        self.scheduler = scheduler
        self.latent_cache: dict[int, Tensor] = {}

    def model_space(self, batch: dict[str, Any]) -> Tensor:
        """The batch in the space the denoiser is trained on; with ``cache_latents``, each dataset
        index is encoded once and its latents reused in later epochs (``[B, C, h, w]``)."""
        images = batch["image"]
        if not (self.spec.cache_latents and self.autoencoder is not None):
            return to_model_space(images, self.autoencoder)
        indices = require_field(batch, "index", self.spec.type).tolist()
        missing = [k for k, index in enumerate(indices) if index not in self.latent_cache]
        if missing:
            fresh = to_model_space(images[missing], self.autoencoder)
            for k, latent in zip(missing, fresh):
                self.latent_cache[indices[k]] = latent.to("cpu", copy=True)
        return torch.stack([self.latent_cache[index] for index in indices]).to(images.device)

    def conditioning(self, batch: dict[str, Any], ctx: sfumato.StepContext) -> sfumato.Conditioning | None:
        """Labels or prompt embeddings, each replaced by the null label / empty prompt with
        probability ``condition_dropout`` (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598)."""
        if self.spec.conditioning == "none":
            return None
        drop = ctx.random.rand() < self.spec.condition_dropout  # (B,)
        if self.spec.conditioning == "class":
            labels = require_field(batch, "label", self.spec.type)
            return sfumato.Conditioning(labels=torch.where(drop, torch.full_like(labels, self.num_classes), labels))
        captions = require_field(batch, "caption", self.spec.type)
        captions = ["" if dropped else caption for caption, dropped in zip(captions, drop.tolist())]
        return self.encode_text(captions)

    def encode_text(self, captions: list[str]) -> sfumato.Conditioning:
        with torch.set_grad_enabled(self.spec.train_text_encoder and torch.is_grad_enabled()):
            out = self.text_encoder.encode(captions)
        return sfumato.Conditioning(tokens=out.tokens, pooled=out.pooled, mask=out.mask)

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        x0 = self.model_space(batch)  # (B, C, h, w)
        x_t, noise, t = noised(self.schedule, x0, ctx)
        target = self.schedule.training_target(x0, noise, t)
        x_in, time = self.schedule.network_input(x_t, t)
        output = self.denoiser(x_in, time, self.conditioning(batch, ctx))
        per_sample = (output.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
        metrics = {"mse": per_sample.mean().detach()}
        per_sample = per_sample * self.schedule.loss_weight(t).to(per_sample.device)  # 1 for VP, flow, EDM
        if self.spec.min_snr_gamma is not None:
            per_sample = per_sample * min_snr_weight(self.schedule.snr(t).to(per_sample.device),
                                                     self.spec.min_snr_gamma, self.schedule.prediction)
        return per_sample.mean(), metrics

    def sample(self, ctx: sfumato.SampleContext) -> Tensor | None:
        if self.scheduler is None:
            return None
        n, device = ctx.count, ctx.device
        cond = None
        if self.spec.conditioning == "class":
            labels = self.spec.sample_labels or list(range(self.num_classes))
            cond = sfumato.Conditioning(labels=torch.tensor([labels[i % len(labels)] for i in range(n)], device=device))
        elif self.spec.conditioning == "text":
            prompts = self.spec.sample_prompts or ctx.examples(n).get("caption") or [""]
            cond = self.encode_text([prompts[i % len(prompts)] for i in range(n)])
        size = ctx.examples(1)["image"].shape[-1]
        blocks = sfumato.blocks
        parts = blocks.Parts(components={"denoiser": self.denoiser, "autoencoder": self.autoencoder,
                                         "scheduler": self.scheduler}, schedule=self.schedule, device=device)
        shape = blocks.latent_shape(parts, n, size, size)
        schedule, plan = blocks.sampling_plan(parts, shape, self.spec.sample_steps)
        x = blocks.initial_latents(blocks.initial_noise(shape, parts, ctx.generator), plan)
        model = blocks.guided_model(parts, cond, None, ctx.generator, schedule, plan)
        return blocks.decode(parts, blocks.sample(parts, model, plan, x, generator=ctx.generator, progress=False))


class TrainDiffusion(sfumato.TrainingTask):
    """Train ``[denoiser]`` with the noise schedule of ``[diffusion]``; latent when the spec has an
    ``[autoencoder]`` (frozen), text-conditional with a ``[text_encoder]`` (frozen unless
    ``train_text_encoder``). Sample grids use ``[scheduler]`` (default DDIM)."""

    required = ("denoiser", "diffusion")

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-diffusion"] = "train-diffusion"
        conditioning: Literal["none", "class", "text"] = Field(
            "none", description="none: unconditional; class: on dataset labels; text: on captions through [text_encoder]."
        )
        condition_dropout: float = Field(
            0.1, ge=0, le=1, description="Share of samples trained unconditionally (null label = num_classes, or the "
            "empty prompt), so the model supports classifier-free guidance."
        )
        train_text_encoder: bool = Field(False, description="Train the text encoder too (False: frozen).")
        min_snr_gamma: float | None = Field(
            None, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); None: off."
        )
        sample_labels: list[int] = Field(default_factory=list, description="Labels of sample grids (default: 0, 1, ...).")
        sample_prompts: list[str] = Field(default_factory=list, description="Prompts of sample grids (default: captions "
                                          "of the first dataset items).")
        sample_steps: int = Field(20, ge=1, description="Sampling steps of sample grids.")
        cache_latents: bool = Field(
            False, description="Encode each dataset item through the frozen [autoencoder] once and reuse its latents "
            "in later epochs (a third of a small latent model's step is the encoder). Only for datasets whose item i "
            "is the same in every epoch (no random crops or flips); holds every latent in memory."
        )

    def recipe(self, setup: sfumato.TrainSetup) -> DiffusionRecipe:
        spec = self.spec
        denoiser = setup.build("denoiser")
        autoencoder = setup.build("autoencoder", required=False)
        check_channels(denoiser, autoencoder, "denoiser")
        if spec.cache_latents and autoencoder is None:
            raise sfumato.SpecError("[task] cache_latents = true caches an [autoencoder]'s latents; this spec trains on "
                                    "pixels (no [autoencoder] table): drop cache_latents")
        text_encoder = setup.build("text_encoder") if spec.conditioning == "text" else None
        num_classes = None
        if spec.conditioning == "class":
            num_classes = getattr(denoiser.spec, "num_classes", None)
            if num_classes is None:
                raise sfumato.SpecError("[task] conditioning = 'class' needs a class-conditional [denoiser] (num_classes)")
            if spec.condition_dropout > 0 and not getattr(denoiser.spec, "null_class", True):
                raise sfumato.SpecError(f"[task] condition_dropout = {spec.condition_dropout} trains the null label "
                                        f"{num_classes}: set [denoiser] null_class = true (or condition_dropout = 0)")
        if spec.min_snr_gamma is not None and not isinstance(setup.schedule, sfumato.NoiseSchedule):
            raise sfumato.SpecError(f"[task] min_snr_gamma weights the epsilon/v/sample losses of the vp formulation; "
                                    f"[diffusion] type {setup.schedule.spec.type!r} has its own loss weight: drop it")
        scheduler = setup.build("scheduler", required=False) if setup.spec.scheduler is not None else None
        if scheduler is None and setup.settings.sample_every:
            scheduler = sfumato.build("scheduler", {"type": "ddim"})
        return DiffusionRecipe(spec, denoiser, setup.schedule, autoencoder, text_encoder, num_classes, scheduler)
