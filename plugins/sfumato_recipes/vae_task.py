"""``train-vae``: a KL-regularised autoencoder (Kingma & Welling 2014; the LDM first stage
without its perceptual and adversarial terms)."""

from __future__ import annotations

from typing import Any, Literal

import sfumato
import torch
from pydantic import Field
from torch import Tensor, nn


class VAERecipe(sfumato.Recipe):
    """``mean |x - D(z)|^p + kl_weight * KL(q(z|x) || N(0, I)) / (C * H * W)`` with ``z`` a
    reparameterised posterior sample.

    Dividing the LDM loss (reconstruction summed over pixels plus ``kl_weight`` times the summed KL)
    by the number of pixel values keeps ``kl_weight`` meaning what it means there (1e-6 for SD)
    while the logged loss reads as a per-pixel error.
    """

    def __init__(self, spec: Any, autoencoder: nn.Module):
        for method in ("posterior", "decode_unscaled"):
            if not callable(getattr(autoencoder, method, None)):
                raise sfumato.SpecError(f"train-vae needs an [autoencoder] with a posterior (type 'vae-kl'); "
                                        f"{type(autoencoder).__name__} has no {method}()")
        super().__init__({"autoencoder": autoencoder})
        self.spec, self.autoencoder = spec, autoencoder

    def loss(self, batch: dict[str, Any], ctx: sfumato.StepContext):
        images = batch["image"]  # (B, 3, H, W)
        posterior = self.autoencoder.posterior(images)
        z = posterior.mean + posterior.std * ctx.random.randn_like(posterior.mean)
        error = self.autoencoder.decode_unscaled(z).float() - images.float()
        reconstruction = (error.abs() if self.spec.reconstruction == "l1" else error.pow(2)).mean()
        kl = posterior.kl().float().mean() / images[0].numel()
        return reconstruction + self.spec.kl_weight * kl, {"reconstruction": reconstruction.detach(), "kl": kl.detach()}

    def sample(self, ctx: sfumato.SampleContext) -> Tensor:
        """The first dataset images (top rows) above their reconstructions from the posterior mean."""
        images = ctx.examples()["image"]
        return torch.cat([images, self.autoencoder.decode(self.autoencoder.encode(images)).clamp(-1, 1)])


class TrainVAE(sfumato.TrainingTask):
    """Train ``[autoencoder]`` (``vae-kl``) to reconstruct the dataset's images."""

    required = ("autoencoder",)

    class Spec(sfumato.ComponentSpec):
        type: Literal["train-vae"] = "train-vae"
        reconstruction: Literal["l1", "l2"] = Field("l1", description="Reconstruction error: mean absolute or squared.")
        kl_weight: float = Field(1e-6, ge=0, description="Weight of the KL term, as in LDM (1e-6 for SD's VAE).")

    def recipe(self, setup: sfumato.TrainSetup) -> VAERecipe:
        return VAERecipe(self.spec, setup.build("autoencoder"))
