"""``clip``: CLIP guidance towards the prompt, through the denoiser's x0 prediction.

Crowson's CLIP-guided diffusion (2021, the "CLIP Guided Diffusion" notebooks) with the score
form of guidance of Nichol et al. 2021, "GLIDE" (https://arxiv.org/abs/2112.10741, sec. 2.4):

    L(x_t)  = mean_k  d(E_img(cutout_k(D(x0_hat(x_t)))), E_txt(prompt))
    d(u, v) = 2 * arcsin(|u/|u| - v/|v|| / 2)^2          (squared great-circle distance)
    eps'    = eps + scale * sqrt(1 - alpha_bar) * grad_x L

i.e. classifier guidance with ``log p(prompt | x_t) = -L``. ``x0_hat`` is the (possibly already
guided) prediction of the wrapped predictor, differentiated through the denoiser
(``through_model = true``, as Crowson does) or only through ``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``
with eps held fixed (cheaper, no backward through the network); ``D`` decodes latents with the
pipeline's ``[autoencoder]`` (differentiably; pixel models have none or an identity).

Which CLIP towers
    Images: the pipeline's ``[image_encoder]`` (a ``clip-image`` encoder), or ``image_encoder``
    in this table. Text: ``text_encoder`` in this table (a nested encoder spec such as
    ``{type = "clip-text", weights = "clip.safetensors"}``, built with ``sfumato.build``), else
    the pipeline's ``[text_encoder]``. The pipeline's text encoder is only the right one when it
    is the text tower of the same CLIP as the image encoder (a tiny CLIP pipeline); a Stable
    Diffusion text encoder is not, so such pipelines set ``text_encoder`` here. A width mismatch
    between the two towers is an error.

Cutout geometry comes from a generator seeded with the run's seed (``context.generator``'s
initial seed), kept apart from the sampler's noise stream so that guidance changes only what it
guides; each wrap starts it afresh, so a pipeline called twice gives identical output.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

import sfumato

from .cutouts import random_cutouts
from .score import shift_score, tile_to_batch

#: Offset from the run's seed for the cutout generator (any fixed value keeps runs reproducible).
CUTOUT_SEED_OFFSET = 0x5F0


def spherical_distance(u: Tensor, v: Tensor) -> Tensor:
    """``2 * arcsin(|u_hat - v_hat| / 2)^2``: half the squared angle between ``u`` and ``v``
    (per row), smooth where cosine similarity is not."""
    u, v = torch.nn.functional.normalize(u, dim=-1), torch.nn.functional.normalize(v, dim=-1)
    return (u - v).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


class CLIPGuidance(sfumato.Guidance):
    """Guides the decoded x0 prediction towards the prompt's CLIP text embedding."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["clip"] = "clip"
        scale: float = Field(
            10.0, description="CLIP guidance scale multiplying grad_x of the spherical distance; 0 is "
            "exactly unguided. Measured on the built-in shapes model (docs/guidance.md): 3 to 30 helps, from 100 "
            "the images fall apart; other CLIPs and image sizes need their own measurement.",
        )
        cutouts: int = Field(16, ge=1, description="Random cutouts per image and call (Crowson's cutn).")
        cut_power: float = Field(
            1.0, gt=0, description="Cutout side exponent: r^power between the CLIP size and the image side; "
            "larger values favour small cutouts.",
        )
        through_model: bool = Field(
            True, description="Differentiate x0 through the denoiser (Crowson). False: treat the predicted "
            "noise as constant, x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) (cheaper; no backward through the network).",
        )
        prompt: str | None = Field(
            None, description="Guide every sample towards this text; None: the run's prompts.",
        )
        text_encoder: Annotated[dict[str, Any] | None, sfumato.ComponentTable("encoder")] = Field(
            None, description="Encoder spec of the CLIP text tower (e.g. {type = \"clip-text\", weights = ...}); "
            "None: the pipeline's [text_encoder], which must be the same CLIP's text tower.",
        )
        image_encoder: Annotated[dict[str, Any] | None, sfumato.ComponentTable("encoder")] = Field(
            None, description="Encoder spec of the CLIP image tower; None: the pipeline's [image_encoder].",
        )

    def __init__(self, spec: Spec):
        self.spec = spec
        self.text_encoder = self._nested(spec.text_encoder, "text")
        self.image_encoder = self._nested(spec.image_encoder, "image")

    @staticmethod
    def _nested(spec: dict[str, Any] | None, modality: str) -> sfumato.Encoder | None:
        if spec is None:
            return None
        encoder = sfumato.build("encoder", spec).eval().requires_grad_(False)
        if encoder.modality != modality:
            raise ValueError(f"clip guidance {modality}_encoder must be a {modality} encoder, "
                             f"got {spec.get('type')!r} ({encoder.modality})")
        return encoder

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec = self.spec
        if spec.scale == 0.0:
            return predictor
        image_encoder, text_encoder = self._towers(context)
        prompts = [spec.prompt] if spec.prompt is not None else context.prompts
        if not prompts:
            raise ValueError("clip guidance needs a prompt: pass one to generate() or set `prompt` in its [[guidance]] table")
        autoencoder = context.components.get("autoencoder")
        seed = context.generator.initial_seed() if context.generator is not None else 0
        generator = torch.Generator("cpu").manual_seed(seed + CUTOUT_SEED_OFFSET)
        cut_size = getattr(image_encoder, "image_size", None)
        text_cache: dict[torch.device, Tensor] = {}

        def text_embeddings(device: torch.device) -> Tensor:
            """The prompts' embeddings ``[P, E]``, computed once per run (nested towers are moved
            to the sample's device on first use; the pipeline's are already there)."""
            if device not in text_cache:
                image_encoder.to(device)
                with torch.no_grad():
                    text_cache[device] = text_encoder.to(device).encode(list(prompts)).pooled.float()
            return text_cache[device]

        def guided(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            fixed = None if spec.through_model else predictor(x, t, cond)
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                if fixed is None:
                    prediction = predictor(x_in, t, cond)
                    x0 = prediction.x0
                else:  # eps held constant: x0 is affine in x_t
                    prediction, a = fixed, fixed.alpha_bar
                    x0 = (x_in - (1 - a).sqrt() * fixed.eps.detach()) / a.sqrt()
                images = autoencoder.decode(x0) if autoencoder is not None else x0  # (B, 3, H, W)
                side = cut_size or min(images.shape[-2:])
                cuts = random_cutouts(images, spec.cutouts, side, spec.cut_power, generator)
                targets = tile_to_batch(text_embeddings(x.device), x.shape[0], "clip guidance prompts")
                embeddings = image_encoder.encode(cuts).pooled.float()  # (cutouts * B, E)
                distance = spherical_distance(embeddings, targets.repeat(spec.cutouts, 1))
                loss = distance.reshape(spec.cutouts, x.shape[0]).mean(dim=0).sum()
                (grad,) = torch.autograd.grad(loss, x_in)
            prediction = sfumato.Prediction(
                x0=prediction.x0.detach(), eps=prediction.eps.detach(), alpha_bar=prediction.alpha_bar.detach()
            )
            return shift_score(prediction, -grad, spec.scale)

        return guided

    def _towers(self, context: sfumato.GuidanceContext) -> tuple[sfumato.Encoder, sfumato.Encoder]:
        image_encoder = self.image_encoder or context.components.get("image_encoder")
        text_encoder = self.text_encoder or context.components.get("text_encoder")
        if image_encoder is None:
            raise ValueError("clip guidance needs a CLIP image encoder: add an [image_encoder] table "
                             "(type = \"clip-image\") or set `image_encoder` in its [[guidance]] table")
        if text_encoder is None:
            raise ValueError("clip guidance needs a CLIP text encoder: add a [text_encoder] table or set "
                             "`text_encoder` in its [[guidance]] table")
        if text_encoder.embed_dim != image_encoder.embed_dim:
            raise ValueError(
                f"clip guidance: the text encoder's embeddings are {text_encoder.embed_dim} wide but the image "
                f"encoder's are {image_encoder.embed_dim}; set `text_encoder` in the [[guidance]] table to the "
                "text tower of the same CLIP as the image encoder"
            )
        return image_encoder, text_encoder
