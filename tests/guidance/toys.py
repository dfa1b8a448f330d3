"""Small, exactly understood models for the guidance tests.

- ``MixtureDenoiser``: the Bayes-optimal denoiser of a two-component Gaussian mixture (no
  training): class-conditional through ``cond.labels`` (label 2 is the null class: the mixture).
- ``train_noise_classifier``: fits a ``noise-classifier`` to the same mixture's noised samples.
- ``tiny_clip`` / ``train_colour_clip``: tiny CLIP towers from the clip plugin (through the
  registry), optionally trained to tell red images from blue ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sfumato

RED_PROMPT, BLUE_PROMPT = "a red image", "a blue image"
NULL_LABEL = 2


def colour_means(size: int = 8) -> Tensor:
    """``[2, 3, size, size]``: class 0 is red (+0.8 red, -0.8 green and blue), class 1 blue."""
    means = torch.full((2, 3, size, size), -0.8)
    means[0, 0] = 0.8
    means[1, 2] = 0.8
    return means


class MixtureDenoiser(nn.Module):
    """eps-prediction of ``x0 ~ sum_k pi_k N(mu_k, s^2 I)`` under ``x_t = sqrt(a) x0 + sqrt(1-a) eps``:

        x_t | k ~ N(sqrt(a) mu_k, v I),  v = a s^2 + 1 - a
        w_k = softmax_k(-|x_t - sqrt(a) mu_k|^2 / (2 v))      (posterior over components)
        E[x0 | x_t] = sum_k w_k (mu_k + sqrt(a) s^2 / v (x_t - sqrt(a) mu_k))

    ``cond.labels`` 0/1 restricts to one component; ``NULL_LABEL`` (or no labels) is the mixture.
    Counts its calls and batch sizes in ``calls``.
    """

    in_channels = out_channels = 3

    def __init__(self, means: Tensor, schedule: sfumato.NoiseSchedule, spread: float = 0.1):
        super().__init__()
        self.register_buffer("means", means)  # (K, C, H, W)
        self.schedule, self.spread = schedule, spread
        self.calls: list[int] = []

    def posterior_mean(self, x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        a = self.schedule.alpha_bar(t).to(x.dtype).reshape(-1, 1, 1, 1)
        v = a * self.spread**2 + 1 - a
        centred = x[:, None] - a.sqrt()[:, None] * self.means[None]  # (B, K, C, H, W)
        logits = -centred.pow(2).flatten(2).sum(-1) / (2 * v.reshape(-1, 1))  # (B, K)
        if labels is not None:
            allowed = (labels[:, None] == torch.arange(len(self.means), device=x.device)) | (labels[:, None] == NULL_LABEL)
            logits = logits.masked_fill(~allowed, float("-inf"))
        weights = logits.softmax(dim=1)[:, :, None, None, None]
        per_component = self.means[None] + (a.sqrt() * self.spread**2 / v)[:, None] * centred
        return (weights * per_component).sum(dim=1)

    def forward(self, x: Tensor, t: Tensor, cond: sfumato.Conditioning | None = None) -> Tensor:
        self.calls.append(x.shape[0])
        labels = cond.labels if cond is not None else None
        a = self.schedule.alpha_bar(t).to(x.dtype).reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * self.posterior_mean(x, t, labels)) / (1 - a).sqrt()


def class_of(images: Tensor, means: Tensor) -> Tensor:
    """Nearest mixture mean per image: ``[B]`` class indices."""
    return torch.cdist(images.flatten(1), means.flatten(1)).argmin(dim=1)


def mixture_batch(means: Tensor, batch: int, generator: torch.Generator, spread: float = 0.1) -> tuple[Tensor, Tensor]:
    labels = torch.randint(0, len(means), (batch,), generator=generator)
    return means[labels] + spread * torch.randn(batch, *means.shape[1:], generator=generator), labels


def train_noise_classifier(means: Tensor, schedule: sfumato.NoiseSchedule, steps: int = 100, seed: int = 0,
                           batch: int = 32):
    """A ``noise-classifier`` trained with cross-entropy on ``x_t`` of the mixture at uniform t."""
    torch.manual_seed(seed)
    classifier = sfumato.build("classifier", {"type": "noise-classifier", "num_classes": 2, "channels": [8, 16]})
    optimiser = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0, labels = mixture_batch(means, batch, g)
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=g).float()
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        loss = F.cross_entropy(classifier(x_t, t), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return classifier.eval()


TINY_CLIP = {
    "embed_dim": 16,
    "text": {"context_length": 8, "width": 32, "layers": 1, "heads": 2, "mlp_width": 64},
    "vision": {"image_size": 8, "patch_size": 4, "width": 32, "layers": 1, "heads": 2, "mlp_width": 64},
}


def tiny_clip(seed: int = 0) -> tuple[sfumato.Encoder, sfumato.Encoder]:
    """Random tiny CLIP towers ``(image_encoder, text_encoder)`` built through the registry."""
    torch.manual_seed(seed)
    image = sfumato.build("encoder", {"type": "clip-image", "architecture": TINY_CLIP})
    text = sfumato.build("encoder", {"type": "clip-text", "architecture": TINY_CLIP})
    return image.eval(), text.eval()


def train_colour_clip(means: Tensor, steps: int = 150, seed: int = 0) -> tuple[sfumato.Encoder, sfumato.Encoder]:
    """Tiny CLIP towers trained contrastively (InfoNCE, both directions) on red / blue images."""
    image, text = tiny_clip(seed)
    image.train(), text.train()
    params = list(image.parameters()) + list(text.parameters())
    optimiser = torch.optim.Adam(params, lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    prompts = [RED_PROMPT, BLUE_PROMPT]
    for _ in range(steps):
        x0, labels = mixture_batch(means, 32, g, spread=0.3)
        image_embeddings = F.normalize(image.encode(x0).pooled, dim=-1)  # (B, E)
        text_embeddings = F.normalize(text.encode(prompts).pooled, dim=-1)  # (2, E)
        logits = 10 * image_embeddings @ text_embeddings.T  # (B, 2)
        loss = F.cross_entropy(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return image.eval().requires_grad_(False), text.eval().requires_grad_(False)


def clip_similarity(images: Tensor, prompt: str, image: sfumato.Encoder, text: sfumato.Encoder) -> Tensor:
    """Cosine similarity of each image's CLIP embedding to the prompt's: ``[B]``."""
    with torch.no_grad():
        u = F.normalize(image.encode(images).pooled, dim=-1)
        v = F.normalize(text.encode([prompt]).pooled, dim=-1)
    return (u @ v.T)[:, 0]


SCHEDULERS = ("ddpm", "ddim", "euler", "euler-ancestral", "heun", "dpmpp-2m")


def toy_schedule() -> sfumato.NoiseSchedule:
    return sfumato.NoiseSchedule(sfumato.DiffusionSpec(betas="linear", beta_start=1e-4, beta_end=0.02))


def sample(
    denoiser: nn.Module,
    schedule: sfumato.NoiseSchedule,
    scheduler: str | dict | sfumato.Scheduler,
    guidance: list[sfumato.Guidance],
    cond: sfumato.Conditioning,
    shape: tuple[int, ...],
    *,
    components: dict | None = None,
    prompts: list[str] | None = None,
    labels: Tensor | None = None,
    steps: int = 4,
    seed: int = 0,
) -> Tensor:
    """What ``sfumato.generate`` does between the conditioning and the decoder: plan the run, wrap
    the guidance in order around the bound predictor (its context holding the plan and the run's
    ``SamplerStep``) and run the scheduler from seeded noise. ``labels`` are
    the run's labels in the guidance context (default: the conditioning's)."""
    if not isinstance(scheduler, sfumato.Scheduler):
        scheduler = sfumato.build("scheduler", {"type": scheduler} if isinstance(scheduler, str) else scheduler)
    generator = torch.Generator("cpu").manual_seed(seed)
    plan = scheduler.plan(schedule, steps)
    context = sfumato.GuidanceContext(schedule=schedule, components=components or {}, prompts=prompts,
                                      labels=cond.labels if labels is None else labels, generator=generator,
                                      plan=plan, step=sfumato.SamplerStep.for_plan(plan))
    predictor = sfumato.bind_predictor(denoiser, schedule)
    for method in guidance:
        predictor = method.wrap(predictor, context)

    def model(x_t: Tensor, t: Tensor) -> sfumato.Prediction:
        t = t.reshape(-1)
        return predictor(x_t, t.expand(x_t.shape[0]) if t.numel() == 1 else t, cond)

    x = sfumato.randn(shape, generator, "cpu") * plan.init_noise_sigma
    with torch.no_grad():
        return sfumato.run_sampler(model, scheduler, plan, x, generator=generator, progress=False, step=context.step)
