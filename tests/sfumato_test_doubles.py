"""Tiny test-double components, registered as a local (third-party style) plugin named ``test``.

They are real implementations of the interfaces, small enough to reason about: a one-step-per-
boundary DDIM-style scheduler, a linear denoiser, a bag-of-characters text encoder, an identity
autoencoder, a classifier-free guidance and a generation task.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

import sfumato

SFUMATO_PLUGIN_API = 1


class StepDDIM(sfumato.Scheduler):
    """Deterministic DDIM (eta = 0) on evenly spaced integer timesteps."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.ddim"] = "test.ddim"
        steps: int = Field(10, ge=1, description="Number of steps.")

    def __init__(self, spec: Spec):
        self.spec = spec

    def plan(self, schedule, steps=None, strength=1.0):
        n = steps or self.spec.steps
        timesteps = torch.linspace(schedule.num_timesteps - 1, 0, n).round()
        timesteps = timesteps[n - max(1, round(n * strength)):]
        sigmas = torch.cat([schedule.sigma_at(timesteps), torch.zeros(1)])
        return sfumato.SamplingPlan(timesteps=timesteps, sigmas=sigmas, init_noise_sigma=1.0, schedule=schedule)

    def step(self, model, x, plan, i, carry=None, noise=None):
        pred = model(x, plan.timesteps[i])
        a_next = 1 / (1 + plan.sigmas[i + 1] ** 2)
        x = a_next.sqrt() * pred.x0 + (1 - a_next).sqrt() * pred.eps
        return sfumato.StepResult(x, pred.x0, {})


class NoisyStep(StepDDIM):
    """StepDDIM plus injected noise (a stand-in for ancestral samplers)."""

    stochastic = True

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.noisy"] = "test.noisy"
        steps: int = Field(10, ge=1, description="Number of steps.")

    def step(self, model, x, plan, i, carry=None, noise=None):
        x, denoised, carry = super().step(model, x, plan, i, carry)
        return sfumato.StepResult(x + 0.01 * plan.sigmas[i + 1] * noise, denoised, carry)


class LinearDenoiser(sfumato.Denoiser):
    """eps = conv1x1(x) + pooled text + label embedding: enough to make conditioning matter."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.linear"] = "test.linear"
        channels: int = Field(3, description="Input and output channels.")
        cond_dim: int = Field(8, description="Width of the text conditioning.")
        num_classes: int | None = Field(None, description="Class-conditional when set.")
        weights: sfumato.SpecPath | None = Field(None, description="safetensors weights.")

    def __init__(self, spec: Spec):
        super().__init__()
        self.in_channels = self.out_channels = spec.channels
        self.num_classes = spec.num_classes
        self.null_label = spec.num_classes
        self.proj = nn.Conv2d(spec.channels, spec.channels, 1)
        self.cond = nn.Linear(spec.cond_dim, spec.channels)
        self.labels = nn.Embedding((spec.num_classes or 0) + 1, spec.channels)
        if spec.weights:
            sfumato.load_into(self, sfumato.load_weights(spec.weights), spec.weights)

    def forward(self, x, t, cond=None):
        out = self.proj(x) * (t.reshape(-1, 1, 1, 1) / 1000 + 0.5)
        if cond is not None and cond.pooled is not None:
            out = out + self.cond(cond.pooled)[:, :, None, None]
        if cond is not None and cond.labels is not None:
            out = out + self.labels(cond.labels)[:, :, None, None]
        return out


class CharEncoder(sfumato.Encoder):
    """Text -> bag of characters projected to ``dim``; the empty string encodes to zeros."""

    modality = "text"

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.chars"] = "test.chars"
        dim: int = Field(8, description="Embedding width.")
        weights: sfumato.SpecPath | None = Field(None, description="safetensors weights.")

    def __init__(self, spec: Spec):
        super().__init__()
        self.proj = nn.Linear(128, spec.dim, bias=False)
        if spec.weights:
            sfumato.load_into(self, sfumato.load_weights(spec.weights), spec.weights)

    @property
    def embed_dim(self) -> int:
        return self.proj.out_features

    def encode(self, inputs):
        counts = torch.zeros(len(inputs), 4, 128, dtype=self.proj.weight.dtype)
        for i, text in enumerate(inputs):
            for j, ch in enumerate(text[:4]):
                counts[i, j, ord(ch) % 128] = 1
        tokens = self.proj(counts)  # (B, 4, D)
        return sfumato.EncoderOutput(tokens=tokens, pooled=tokens.sum(1))


class Identity(sfumato.Autoencoder):
    class Spec(sfumato.ComponentSpec):
        type: Literal["test.identity"] = "test.identity"
        weights: sfumato.SpecPath | None = Field(None, description="Unused; an identity has no weights.")

    latent_channels = 3
    downscale = 1

    def __init__(self, spec: Spec):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def encode(self, images, generator=None):
        return images * self.scale

    def decode(self, latents):
        return latents / self.scale


class CFG(sfumato.Guidance):
    """Classifier-free guidance, one batched forward."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.cfg"] = "test.cfg"
        scale: float = Field(3.0, description="Guidance scale; 1 is unguided.")

    def __init__(self, spec: Spec):
        self.spec = spec

    def wrap(self, predictor, context):
        def guided(x, t, cond):
            if self.spec.scale == 1.0 or cond.negative is None:
                return predictor(x, t, cond)
            both = predictor(torch.cat([x, x]), torch.cat([t, t]), sfumato.Conditioning.cat([cond.negative, cond]))
            uncond, positive = both.chunk(2)
            return uncond.lerp(positive, self.spec.scale)

        return guided


class Offset(sfumato.Guidance):
    """Shifts eps by a constant: a guidance with a required field."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.offset"] = "test.offset"
        offset: float = Field(description="Added to the predicted noise (required).")

    def __init__(self, spec: Spec):
        self.spec = spec

    def wrap(self, predictor, context):
        def shifted(x, t, cond):
            pred = predictor(x, t, cond)
            eps = pred.eps + self.spec.offset
            x0 = (x - (1 - pred.alpha_bar).sqrt() * eps) / pred.alpha_bar.sqrt()
            return sfumato.Prediction(x0=x0, eps=eps, alpha_bar=pred.alpha_bar)

        return shifted


class Generate(sfumato.Task):
    required = ("denoiser", "scheduler", "diffusion")

    class Spec(sfumato.ComponentSpec):
        type: Literal["test.generate"] = "test.generate"
        height: int = Field(8, description="Image height.")
        width: int = Field(8, description="Image width.")

    def __init__(self, spec: Spec):
        self.spec = spec

    def run(self, pipeline, prompt=None, **kwargs: Any):
        kwargs.setdefault("height", self.spec.height)
        kwargs.setdefault("width", self.spec.width)
        kwargs.setdefault("progress", False)
        return sfumato.generate(pipeline, prompt, **kwargs)


COMPONENTS = (StepDDIM, NoisyStep, LinearDenoiser, CharEncoder, Identity, CFG, Offset, Generate)


@sfumato.hookimpl
def register_components(register):
    for cls in COMPONENTS:
        register(cls)


def spec_dict(**changes: Any) -> dict[str, Any]:
    """A complete text-to-image spec over the doubles, untrained on purpose (``allow_untrained``)."""
    spec = {
        "task": "test.generate",
        "runtime": {"allow_untrained": True},
        "text_encoder": {"type": "test.chars"},
        "autoencoder": {"type": "test.identity"},
        "denoiser": {"type": "test.linear"},
        "diffusion": {"betas": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        "scheduler": {"type": "test.ddim", "steps": 5},
        "guidance": [{"type": "test.cfg", "scale": 2.0}],
    }
    spec.update(changes)
    return spec
