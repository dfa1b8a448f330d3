"""``train-lora``: a LoRA on a text-to-image pipeline's denoiser (and optionally its text
encoder), base weights frozen, on captioned images or one instance prompt (DreamBooth, Ruiz et al.
2022, https://arxiv.org/abs/2208.12242) with optional prior preservation on class images the base
model draws. Saved in the diffusers / PEFT and the kohya / WebUI layouts, which ``[[adapters]]``
and ``--lora`` load.

The factors come from the ``lora`` adapter type (``registry.get("adapter", "lora").Trainable``),
so the file format and the change a layer gets are the adapter's own: the recipe only trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import sfumato
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from .batches import require_field
from .diffusion_task import DiffusionRecipe, min_snr_weight
from .latents import check_channels, noised, to_model_space

#: The files a run writes: the diffusers / PEFT layout, and the kohya / WebUI one beside it.
PEFT_FILE, KOHYA_FILE = "lora{suffix}.safetensors", "lora{suffix}.kohya.safetensors"
#: Class images the base model draws per ``generate`` call (memory, not results: each has its own seed).
CLASS_IMAGE_CHUNK = 8


def lora_type() -> type:
    """The registered ``lora`` adapter type (the adapters plugin's), which owns the factors and files."""
    try:
        return sfumato.get_registry().get("adapter", "lora")
    except sfumato.SpecError as exc:
        raise sfumato.SpecError(f"task 'train-lora' trains and saves the 'lora' adapter type of the adapters plugin: "
                                f"{exc}") from None


def class_prompts(spec: Any) -> list[str]:
    """The prior-preservation prompts of a ``train-lora`` spec: ``class_prompt`` as a list."""
    return [spec.class_prompt] if isinstance(spec.class_prompt, str) else list(spec.class_prompt)


def class_prompt_of(spec: Any, index: int) -> str:
    """The prompt of class image ``index`` (``class-{index:04d}.png``)."""
    prompts = class_prompts(spec)
    return prompts[index % len(prompts)]


class LoRARecipe(DiffusionRecipe):
    """The denoising loss of ``train-diffusion`` with only the LoRA factors trained; with prior
    preservation, ``loss = instance + prior_loss_weight * class`` over a class image paired with
    each instance by its dataset index."""

    output_files = (KOHYA_FILE,)  # --overwrite removes an earlier run's kohya file too

    def __init__(self, spec: Any, network: nn.Module, denoiser: nn.Module, schedule: sfumato.Formulation,
                 autoencoder: nn.Module | None, text_encoder: nn.Module, scheduler: sfumato.Scheduler | None,
                 class_images: Tensor | None):
        frozen = {"denoiser": denoiser, "text_encoder": text_encoder}
        if autoencoder is not None:
            frozen["autoencoder"] = autoencoder
        sfumato.Recipe.__init__(self, {"lora": network}, frozen)
        self.spec, self.network, self.denoiser, self.schedule = spec, network, denoiser, schedule
        self.autoencoder, self.text_encoder, self.num_classes, self.scheduler = autoencoder, text_encoder, None, scheduler
        self.latent_cache: dict[int, Tensor] = {}
        self.class_images = class_images  # (N, 3, H, W) in [-1, 1], or None
        self.class_latents: Tensor | None = None

    def captions(self, batch: dict[str, Any]) -> list[str]:
        """The instance prompt for every image (DreamBooth), else the dataset's captions."""
        if self.spec.instance_prompt is not None:
            return [self.spec.instance_prompt] * batch["image"].shape[0]
        return list(require_field(batch, "caption", self.spec.type))

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        x0 = self.model_space(batch)  # (B, C, h, w)
        captions = self.dropped(self.captions(batch), ctx)
        count = x0.shape[0]
        if self.class_images is not None:
            pairs = batch["index"].to("cpu") % self.class_images.shape[0]
            x0 = torch.cat([x0, self.class_space()[pairs].to(x0.device)])  # (2B, C, h, w)
            prompts = class_prompts(self.spec)
            captions = captions + self.dropped([prompts[i % len(prompts)] for i in pairs.tolist()], ctx)
        x_t, noise, t = self.noised(x0, count, ctx)
        target = self.schedule.training_target(x0, noise, t)
        x_in, time = self.schedule.network_input(x_t, t)
        output = self.denoiser(x_in, time, self.encode_text(captions))
        per_sample = (output.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,) or (2B,)
        metrics = {"mse": per_sample[:count].mean().detach()}
        per_sample = per_sample * self.schedule.loss_weight(t).to(per_sample.device)
        if self.spec.min_snr_gamma is not None:
            per_sample = per_sample * min_snr_weight(self.schedule.snr(t).to(per_sample.device),
                                                     self.spec.min_snr_gamma, self.schedule.prediction)
        loss = per_sample[:count].mean()
        if self.class_images is not None:
            prior = per_sample[count:].mean()
            metrics["prior_mse"] = prior.detach()
            loss = loss + self.spec.prior_loss_weight * prior
        return loss, metrics

    def dropped(self, captions: list[str], ctx: sfumato.StepContext) -> list[str]:
        """Each caption replaced by the empty prompt with probability ``condition_dropout``."""
        if self.spec.condition_dropout == 0:
            return captions
        drop = ctx.random.rand() < self.spec.condition_dropout  # (B,)
        return ["" if dropped else caption for caption, dropped in zip(captions, drop.tolist())]

    def noised(self, x0: Tensor, count: int, ctx: sfumato.StepContext) -> tuple[Tensor, Tensor, Tensor]:
        """Noise for the instance rows, then (drawn after them, from each sample's generator) for
        the class rows paired with them."""
        parts = [noised(self.schedule, part, ctx) for part in x0.split(count)]
        return tuple(torch.cat(tensors) for tensors in zip(*parts))  # type: ignore[return-value]

    def class_space(self) -> Tensor:
        """The class images in the denoiser's space, encoded once."""
        if self.class_latents is None:
            device = next(self.denoiser.parameters()).device
            chunks = [to_model_space(chunk.to(device), self.autoencoder) for chunk in self.class_images.split(16)]
            self.class_latents = torch.cat(chunks).cpu()
        return self.class_latents

    def save(self, out: Path, suffix: str = "") -> dict[str, Path]:
        metadata = {"sfumato.module": "lora", "sfumato.task": self.spec.model_dump(mode="json")}
        peft = self.network.save(out / PEFT_FILE.format(suffix=suffix), "peft", metadata)
        self.network.save(out / KOHYA_FILE.format(suffix=suffix), "kohya", metadata)
        return {"lora": peft}


class TrainLoRA(sfumato.TrainingTask):
    """Train LoRA factors on ``[denoiser]`` (and ``[text_encoder]`` with ``train_text_encoder``)
    of a text-to-image spec, everything else frozen; ``out/lora.safetensors`` (diffusers / PEFT)
    and ``out/lora.kohya.safetensors`` (kohya / WebUI) hold the result."""

    required = ("denoiser", "diffusion", "text_encoder")

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-lora"] = "train-lora"
        rank: int = Field(4, ge=1, description="Rank r of every LoRA layer (its factors are [out, r] and [r, in]).")
        alpha: float | None = Field(None, gt=0, description="LoRA alpha: a layer changes by alpha / rank * up @ down; "
                                    "None: the rank (factor 1).")
        target_modules: list[str] = Field(
            ["attention"], min_length=1, description="Denoiser layers to adapt: groups (attention, cross-attention, "
            "ff, proj, conv) or diffusers layer names or their last parts (to_k, attn2.to_v), PEFT's rule.")
        train_text_encoder: bool = Field(False, description="Also put LoRA factors on [text_encoder] and train them.")
        text_encoder_target_modules: list[str] = Field(
            ["attention"], min_length=1, description="Text encoder layers to adapt with train_text_encoder: attention "
            "(q_proj, k_proj, v_proj, out_proj), ff (fc1, fc2), or transformers layer names.")
        instance_prompt: str | None = Field(
            None, description="DreamBooth: every image's caption is this prompt (None: the dataset's captions).")
        class_prompt: str | list[str] | None = Field(
            None, description="Prior preservation: also train on class_images with this prompt, so the model keeps "
            "what it drew for it (None: off); a list: class image i has prompt i modulo the list's length.")
        class_images: sfumato.SpecPath | None = Field(
            None, description="Folder of class images for prior preservation (PNG); the base model draws the missing "
            "ones up to num_class_images, from class_prompt, before training.")
        num_class_images: int = Field(50, ge=1, description="Class images to use (and draw when missing).")
        prior_loss_weight: float = Field(1.0, ge=0, description="Weight of the class images' loss.")
        conditioning: Literal["text"] = Field("text", description="LoRAs train text-to-image models on captions.")
        condition_dropout: float = Field(0.0, ge=0, le=1, description="Share of captions replaced by the empty prompt.")
        min_snr_gamma: float | None = Field(None, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023).")
        sample_prompts: list[str] = Field(default_factory=list, description="Prompts of sample grids (default: captions "
                                          "of the first dataset items).")
        sample_steps: int = Field(20, ge=1, description="Sampling steps of sample grids.")
        cache_latents: bool = Field(False, description="Encode each dataset item through [autoencoder] once (datasets "
                                    "whose item i is the same in every epoch).")

        @model_validator(mode="after")
        def _prior_preservation(self):
            if self.class_prompt == []:
                raise ValueError("class_prompt is an empty list; give at least one prompt (or none for no prior "
                                 "preservation)")
            if (self.class_prompt is None) != (self.class_images is None):
                raise ValueError("prior preservation needs both class_prompt and class_images (or neither); got "
                                 f"class_prompt = {self.class_prompt!r}, class_images = {self.class_images!r}")
            return self

    def train_defaults(self) -> dict[str, Any]:
        return {"lr": 1e-4, "weight_decay": 0.0}

    def recipe(self, setup: sfumato.TrainSetup) -> LoRARecipe:
        spec = self.spec
        denoiser = setup.build("denoiser")
        autoencoder = setup.build("autoencoder", required=False)
        check_channels(denoiser, autoencoder, "denoiser")
        text_encoder = setup.build("text_encoder")
        class_images = self.class_images(setup) if spec.class_prompt is not None else None
        components = {"denoiser": denoiser, "text_encoder": text_encoder}
        targets = {"denoiser": spec.target_modules}
        if spec.train_text_encoder:
            targets["text_encoder"] = spec.text_encoder_target_modules
        network = lora_type().Trainable.for_components(components, targets, spec.rank, spec.alpha, setup.settings.seed)
        network.attach(components)
        scheduler = setup.build("scheduler", required=False) if setup.spec.scheduler is not None else None
        if scheduler is None and setup.settings.sample_every:
            scheduler = sfumato.build("scheduler", {"type": "ddim"})
        return LoRARecipe(spec, network, denoiser, setup.schedule, autoencoder, text_encoder, scheduler, class_images)

    def class_images(self, setup: sfumato.TrainSetup) -> Tensor:
        """``num_class_images`` class images ``[N, 3, H, W]`` in [-1, 1] from ``class_images``,
        after drawing the missing ones with the base model (``class-NNNN.png``, image ``i`` from
        seed ``seed * 1_000_003 + i`` and ``class_prompt`` i (a list: i modulo its length), so a rerun
        draws the same and a resumed run reads them)."""
        spec = self.spec
        folder = Path(spec.class_images)
        if folder.exists() and not folder.is_dir():
            raise sfumato.SpecError(f"[task] class_images = {str(folder)!r} is a file; give a folder (the base model "
                                    "draws the missing class images into it)")
        folder.mkdir(parents=True, exist_ok=True)
        size = tuple(setup.dataset[0]["image"].shape[-2:])
        paths = [folder / f"class-{i:04d}.png" for i in range(spec.num_class_images)]
        missing = [i for i, path in enumerate(paths) if not path.is_file()]
        if missing:
            self.draw_class_images(setup, [paths[i] for i in missing], [setup.settings.seed * 1_000_003 + i
                                                                        for i in missing], size)
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(sfumato.from_pil(image.convert("RGB"), (size[1], size[0])))
        return torch.cat(images)

    def draw_class_images(self, setup: sfumato.TrainSetup, paths: list[Path], seeds: list[int],
                          size: tuple[int, int]) -> None:
        """The base model's images of ``class_prompt`` (the spec's components, [scheduler] and
        [[guidance]]; DDIM when it has no [scheduler]), written as PNG; image ``i`` of the folder
        (``class-{i:04d}.png``) from prompt ``i`` modulo the prompts."""
        spec = setup.spec
        if spec.scheduler is None:
            spec = spec.model_copy(update={"scheduler": sfumato.get_registry().get("scheduler", "ddim").Spec()})
        pipe = sfumato.Pipeline(spec)  # a training task's pipeline: the dataset is not built
        for start in range(0, len(paths), CLASS_IMAGE_CHUNK):
            chunk = seeds[start:start + CLASS_IMAGE_CHUNK]
            names = paths[start:start + CLASS_IMAGE_CHUNK]
            prompts = [class_prompt_of(self.spec, int(path.stem.split("-")[-1])) for path in names]
            result = sfumato.generate(pipe, prompts, seeds=chunk, height=size[0],
                                      width=size[1], progress=False)
            for path, image in zip(names, result.images):
                image.save(path)
