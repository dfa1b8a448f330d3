"""``train-clip`` (from scratch) and ``train-clip-finetune`` (new projection heads on pretrained towers):
sfumato's one implementation of CLIP fine-tuning (docs/clip.md).

A run's folder is one CLIP: its ``trained.toml`` points ``[text_encoder]`` and ``[image_encoder]``
at the towers (the trained ones, or the frozen originals), at the fine-tuning heads
(``head = "heads.safetensors"``) and records the learned ``logit_scale``, so every CLIP command
takes ``--weights RUN`` or ``--spec RUN/trained.toml``. The recipes write those fields into the
encoders' specs when they save (the specs are what the trainer writes into ``trained.toml``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import sfumato
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from .batches import require_field
from .contrastive import MAX_LOG_SCALE, Temperature, caption_groups, info_nce, retrieval_accuracy, siglip_loss, soft_target_loss

#: The class prompt of ``objective = "labels"`` when neither ``label_template`` nor the dataset gives one.
DEFAULT_LABEL_TEMPLATE = "a photo of a {}"
#: SigLIP's initial logit scale and bias, t = 10 and b = -10 (https://arxiv.org/abs/2303.15343, section 3.1).
SIGLIP_LOG_SCALE, SIGLIP_BIAS = math.log(10.0), -10.0


def record_in_spec(encoder: nn.Module, **fields: Any) -> None:
    """Set spec fields of an encoder that has them (``clip-text`` / ``clip-image``; other encoder
    types keep their specs): what the run's ``trained.toml`` and saved tower files then record."""
    spec = getattr(encoder, "spec", None)
    for name, value in fields.items():
        if spec is not None and name in type(spec).model_fields:
            setattr(spec, name, value)


def learned_log_scale(temperature: Temperature) -> float:
    return round(float(temperature.log_scale.detach().clamp(max=MAX_LOG_SCALE)), 6)


def held_out_figures(ctx: sfumato.EvalContext, encode_image: Any, encode_text: Any,
                     label_prompts: list[str] | None = None) -> dict[str, float]:
    """The held-out validation of a CLIP recipe (``[train] eval_every``), on ``ctx.examples()``:

    - ``zero_shot_top1`` when the examples have labels: each image against every class prompt
      (``label_prompts`` in label order, else each label's first caption);
    - ``image_to_text_r1/_r5`` and ``text_to_image_r1/_r5`` when they have several captions (or
      captions and no label): ``sfumato.retrieval_recall``, captions compared by text.
    """
    items = ctx.examples()
    images = torch.stack([item["image"] for item in items])
    image_embeds = torch.cat([encode_image(images[i : i + ctx.batch_size].to(ctx.device)).float().cpu()
                              for i in range(0, len(images), ctx.batch_size)])  # (N, E)
    image_embeds = F.normalize(image_embeds, dim=-1)
    figures: dict[str, float] = {}
    if all("label" in item for item in items):
        labels = torch.tensor([int(item["label"]) for item in items])
        if label_prompts is None:
            first = {}
            for item in items:
                first.setdefault(int(item["label"]), item["caption"])
            classes = sorted(first)
            label_prompts = [first[c] for c in classes]
            labels = torch.tensor([classes.index(int(label)) for label in labels.tolist()])
        prompts = F.normalize(encode_text(label_prompts).float().cpu(), dim=-1)  # (C, E)
        figures["zero_shot_top1"] = sfumato.topk_accuracy(image_embeds @ prompts.T, labels, ks=(1,))["top1"]
    if any(len(item.get("captions") or []) > 1 or "label" not in item for item in items):
        captions = [list(item.get("captions") or [item["caption"]]) for item in items]
        texts = [text for group in captions for text in group]
        owner = torch.tensor([i for i, group in enumerate(captions) for _ in group])  # (M,)
        text_embeds = torch.cat([encode_text(texts[i : i + ctx.batch_size]).float().cpu()
                                 for i in range(0, len(texts), ctx.batch_size)])  # (M, E)
        recall = sfumato.retrieval_recall(image_embeds, text_embeds, owner, ks=(1, 5), texts=texts)
        figures.update({name.replace("@", "_r"): value for name, value in sorted(recall.items())})
    return figures


class CLIPRecipe(sfumato.Recipe):
    """Symmetric InfoNCE between the pooled embeddings of matching images and captions; a locked
    tower is frozen (LiT, Zhai et al. 2022, https://arxiv.org/abs/2111.07991, locks the image
    tower; locking the text tower instead trains a new image tower for an existing text encoder)."""

    def __init__(self, spec: Any, text_encoder: nn.Module, image_encoder: nn.Module, temperature: Temperature):
        trainable: dict[str, nn.Module] = {}
        frozen: dict[str, nn.Module] = {}
        for name, module, train in (("text_encoder", text_encoder, spec.train_text),
                                    ("image_encoder", image_encoder, spec.train_image)):
            (trainable if train else frozen)[name] = module
        super().__init__({**trainable, "temperature": temperature}, frozen)
        self.spec, self.text_encoder, self.image_encoder, self.temperature = spec, text_encoder, image_encoder, temperature

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        captions = require_field(batch, "caption", "train-clip")
        with torch.set_grad_enabled(self.spec.train_image and torch.is_grad_enabled()):
            image_embeds = self.image_encoder.encode(batch["image"]).pooled  # (B, E)
        with torch.set_grad_enabled(self.spec.train_text and torch.is_grad_enabled()):
            text_embeds = self.text_encoder.encode(captions).pooled  # (B, E)
        groups = caption_groups(captions, image_embeds.device) if self.spec.duplicate_captions == "positives" else None
        loss, accuracy = info_nce(image_embeds, text_embeds, self.temperature(), groups)
        return loss, {"accuracy": accuracy, "logit_scale": self.temperature().detach()}

    def evaluate(self, ctx: sfumato.EvalContext) -> dict[str, float]:
        """Zero-shot accuracy and retrieval recall on the held-out split (``held_out_figures``)."""
        return held_out_figures(ctx, lambda images: self.image_encoder.encode(images).pooled,
                                lambda texts: self.text_encoder.encode(texts).pooled)

    def save(self, out: Path, suffix: str = "") -> dict[str, Path]:
        """The towers (their specs recording the learned logit scale) and ``temperature.safetensors``."""
        for encoder in (self.text_encoder, self.image_encoder):
            record_in_spec(encoder, logit_scale=learned_log_scale(self.temperature))
        return super().save(out, suffix)


class TrainCLIP(sfumato.TrainingTask):
    """CLIP from scratch: ``[text_encoder]`` and ``[image_encoder]`` train (either can be locked),
    with a learnable temperature (saved as ``temperature.safetensors``), on a dataset with captions."""

    required = ("text_encoder", "image_encoder")

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-clip"] = "train-clip"
        logit_scale_init: float = Field(math.log(1 / 0.07), description="Initial log logit scale (temperature 0.07).")
        duplicate_captions: Literal["positives", "negatives"] = Field(
            "positives", description="Identical captions in a batch: 'positives' counts every such pair as a match "
            "(multi-positive InfoNCE; for datasets whose captions repeat), 'negatives' is CLIP's plain loss."
        )
        train_text: bool = Field(True, description="Train the text tower (False: locked, it needs weights).")
        train_image: bool = Field(True, description="Train the image tower (False: locked, it needs weights).")

        @model_validator(mode="after")
        def _something_trains(self):
            if not (self.train_text or self.train_image):
                raise ValueError("train_text and train_image are both false: nothing would train")
            return self

    def __init__(self, spec: Spec):
        self.spec = spec

    def train_defaults(self) -> dict[str, Any]:
        return {"lr": 5e-4, "weight_decay": 0.2, "betas": (0.9, 0.98), "eps": 1e-6, "warmup_steps": 100,
                "lr_schedule": "cosine"}

    def recipe(self, setup: sfumato.TrainSetup) -> CLIPRecipe:
        towers = {}
        for table, train in (("text_encoder", self.spec.train_text), ("image_encoder", self.spec.train_image)):
            tower = towers[table] = setup.build(table)
            if not train and getattr(getattr(tower, "spec", None), "weights", None) is None:
                raise sfumato.SpecError(f"[task] locks the {table} (train_{table.split('_')[0]} = false) but "
                                        f"[{table}] has no weights: a locked random tower teaches nothing")
        return CLIPRecipe(self.spec, towers["text_encoder"], towers["image_encoder"],
                          Temperature(self.spec.logit_scale_init))


class FinetuneHeads(nn.Module):
    """The modules fine-tuning adds: a projection head per tower, a learnable temperature and, for
    SigLIP, a logit bias.

    A run saves them as ``heads.safetensors`` and points its ``trained.toml`` at it, so the CLIP
    encoders apply the heads (``--weights RUN``). ``FinetuneHeads.load`` reads them back for code of
    your own: ``text_head(text_encoder.encode(texts).pooled)`` and
    ``image_head(image_encoder.encode(images).pooled)`` embed into the fine-tuned space (compare
    them by cosine similarity); ``temperature()`` is the learned logit scale.

    The heads are the clip plugin's ``ProjectionHead``, made by the encoders' ``projection_head``
    (the encoder that later applies a head is the one that defines it).
    """

    def __init__(self, text_head: nn.Module, image_head: nn.Module, logit_scale_init: float = math.log(1 / 0.07),
                 logit_bias_init: float | None = None):
        super().__init__()
        self.text_head, self.image_head = text_head, image_head
        self.temperature = Temperature(logit_scale_init)
        self.logit_bias = nn.Parameter(torch.tensor(logit_bias_init)) if logit_bias_init is not None else None

    @classmethod
    def create(cls, text_encoder: nn.Module, image_encoder: nn.Module, projection_dim: int, dropout: float = 0.1,
               **init: Any) -> FinetuneHeads:
        """Fresh heads from the width of each encoder's pooled output to ``projection_dim``."""
        heads = []
        for table, encoder in (("text_encoder", text_encoder), ("image_encoder", image_encoder)):
            make = getattr(encoder, "projection_head", None)
            if make is None:
                raise sfumato.SpecError(f"[task] train-clip-finetune adds a projection head to each CLIP tower, but "
                                        f"[{table}] type {encoder.spec.type!r} provides none; use clip-text and "
                                        "clip-image encoders")
            heads.append(make(encoder.embed_dim, projection_dim, dropout))
        return cls(*heads, **init)

    @classmethod
    def load(cls, path: str | Path) -> FinetuneHeads:
        """The heads a ``train-clip-finetune`` run saved (``out/heads.safetensors``, or
        ``out/epoch-N/heads.safetensors``), in eval mode; the widths are read from the weights."""
        state = sfumato.load_weights(path)
        text, image = state.get("text_head.proj.weight"), state.get("image_head.proj.weight")
        if text is None or image is None or text.ndim != 2 or image.ndim != 2:
            raise sfumato.WeightsError(f"{path}: not the heads of a train-clip-finetune run (it has no "
                                       "text_head.proj.weight and image_head.proj.weight matrices); give the "
                                       "heads.safetensors the run wrote")
        make = sfumato.get_registry().get("encoder", "clip-text").projection_head
        bias = state.get("logit_bias")
        heads = cls(make(text.shape[1], text.shape[0]), make(image.shape[1], image.shape[0]),  # proj: (out, in)
                    logit_bias_init=None if bias is None else float(bias))
        return sfumato.load_into(heads, state, source=str(path)).eval()


class CLIPFinetuneRecipe(sfumato.Recipe):
    """Pooled tower outputs through new heads; label-prompt cross-entropy or caption InfoNCE."""

    def __init__(self, spec: Any, text_encoder: nn.Module, image_encoder: nn.Module, prompts: list[str]):
        self.spec = spec
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        siglip = spec.objective == "captions" and spec.caption_loss == "siglip"
        init = {"logit_scale_init": SIGLIP_LOG_SCALE, "logit_bias_init": SIGLIP_BIAS} if siglip else {}
        self.heads = FinetuneHeads.create(text_encoder, image_encoder, spec.projection_dim, spec.dropout, **init)
        trainable: dict[str, nn.Module] = {"heads": self.heads}
        frozen: dict[str, nn.Module] = {}
        for name, module, train in (("text_encoder", text_encoder, spec.train_text),
                                    ("image_encoder", image_encoder, spec.train_image)):
            (trainable if train else frozen)[name] = module
        super().__init__(trainable, frozen)
        self.prompts = prompts

    def encode_text(self, texts: list[str]) -> Tensor:
        with torch.set_grad_enabled(self.spec.train_text and torch.is_grad_enabled()):
            pooled = self.text_encoder.encode(texts).pooled
        return self.heads.text_head(pooled)

    def encode_image(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(self.spec.train_image and torch.is_grad_enabled()):
            pooled = self.image_encoder.encode(images).pooled
        return self.heads.image_head(pooled)

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        image_embeds = self.encode_image(batch["image"])  # (B, P)
        if self.spec.objective == "captions":
            text_embeds = self.encode_text(require_field(batch, "caption", self.spec.type))  # (B, P)
            return self.caption_loss(image_embeds, text_embeds), {"accuracy": retrieval_accuracy(image_embeds, text_embeds)}
        labels = require_field(batch, "label", self.spec.type)
        label_embeds = F.normalize(self.encode_text(self.prompts).float(), dim=-1)  # (C, P)
        logits = self.heads.temperature() * F.normalize(image_embeds.float(), dim=-1) @ label_embeds.T  # (B, C)
        loss = F.cross_entropy(logits, labels)
        return loss, {"accuracy": (logits.argmax(dim=1) == labels).float().mean()}

    def evaluate(self, ctx: sfumato.EvalContext) -> dict[str, float]:
        """In the fine-tuned space: zero-shot accuracy against the training's label prompts
        (``objective = "labels"``) and retrieval recall on the held-out split (``held_out_figures``)."""
        return held_out_figures(ctx, self.encode_image, self.encode_text,
                                self.prompts if self.spec.objective == "labels" else None)

    def caption_loss(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """The ``caption_loss`` of matching image-caption pairs."""
        if self.spec.caption_loss == "siglip":
            return siglip_loss(image_embeds, text_embeds, self.heads.temperature(), self.heads.logit_bias)
        if self.spec.caption_loss == "soft_targets":
            return soft_target_loss(image_embeds.float(), text_embeds.float())
        return info_nce(image_embeds, text_embeds, self.heads.temperature())[0]

    def save(self, out: Path, suffix: str = "") -> dict[str, Path]:
        """``heads.safetensors`` (and any trained tower); then the encoders' specs name the heads
        and the learned logit scale, which the run's ``trained.toml`` records. A tower file is
        saved before its spec names the heads: the file holds the bare tower."""
        for encoder in (self.text_encoder, self.image_encoder):
            record_in_spec(encoder, head=None)
        saved = super().save(out, suffix)
        for encoder in (self.text_encoder, self.image_encoder):
            record_in_spec(encoder, head=saved["heads"].name, logit_scale=learned_log_scale(self.heads.temperature))
        return saved



class TrainCLIPFinetune(sfumato.TrainingTask):
    """Fine-tune pretrained ``[text_encoder]`` / ``[image_encoder]`` towers through added projection
    heads (saved as ``heads.safetensors``; a trained tower is saved under its table name).

    ``objective = "labels"``: each image is scored against every class's prompt
    (``label_template``), cross-entropy on the label (CIFAR-10; 5 epochs of batch 16 by default).
    ``objective = "captions"``: InfoNCE on image-caption pairs (Flickr8k; 30 epochs by default).
    Weights are saved after every epoch (``out/epoch-N/``).
    """

    required = ("text_encoder", "image_encoder")

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-clip-finetune"] = "train-clip-finetune"
        objective: Literal["labels", "captions"] = Field(
            "labels", description="labels: cross-entropy over label prompts; captions: contrastive on captions."
        )
        caption_loss: Literal["info_nce", "siglip", "soft_targets"] = Field(
            "info_nce", description="objective = 'captions': CLIP's symmetric InfoNCE; SigLIP's sigmoid loss (with a "
            "learnable logit bias, t = 10 and b = -10 at the start); or the Flickr8k reference's soft targets "
            "(softmax of the in-modality similarities, detached)."
        )
        projection_dim: int = Field(256, ge=1, description="Width of the new joint embedding space.")
        dropout: float = Field(0.1, ge=0, lt=1, description="Dropout inside the projection heads.")
        train_text: bool = Field(False, description="Also fine-tune the text tower (False: frozen).")
        train_image: bool = Field(False, description="Also fine-tune the image tower (False: frozen).")
        label_template: str | None = Field(
            None, description="Prompt of a class; {} is the class name. None: the dataset's own class prompts when "
            f"it has them (CIFAR-10: 'a photo of an airplane'), else {DEFAULT_LABEL_TEMPLATE!r}."
        )
        labels: list[str] | None = Field(
            None, description="Class names, in label order. None: the dataset's label_names (CIFAR-10 has them)."
        )

    def __init__(self, spec: Spec):
        self.spec = spec

    def train_defaults(self) -> dict[str, Any]:
        towers_train = self.spec.train_text or self.spec.train_image
        return {"epochs": 5 if self.spec.objective == "labels" else 30, "batch_size": 16, "save_every_epoch": True,
                "lr": 1e-5 if towers_train else 1e-3}

    def recipe(self, setup: sfumato.TrainSetup) -> CLIPFinetuneRecipe:
        prompts = self.label_prompts(setup.dataset) if self.spec.objective == "labels" else []
        return CLIPFinetuneRecipe(self.spec, setup.build("text_encoder"), setup.build("image_encoder"), prompts)

    def label_prompts(self, dataset: Any) -> list[str]:
        """One prompt per class, in label order."""
        dataset_prompts = getattr(dataset, "prompts", None)
        if self.spec.labels is None and self.spec.label_template is None and dataset_prompts:
            return list(dataset_prompts)
        names = self.spec.labels or getattr(dataset, "label_names", None) or getattr(dataset, "class_names", None)
        if not names:
            raise sfumato.SpecError(f"[task] objective = 'labels': [dataset] type {dataset.spec.type!r} has no class "
                                    "names; list them in [task] labels = [...]")
        classes = getattr(dataset, "label_names", None) or getattr(dataset, "class_names", None)
        if classes and len(names) < len(classes):
            raise sfumato.SpecError(f"[task] labels lists {len(names)} names but [dataset] type {dataset.spec.type!r} "
                                    f"has {len(classes)} classes; name every class, in label order")
        return [(self.spec.label_template or DEFAULT_LABEL_TEMPLATE).format(name) for name in names]
