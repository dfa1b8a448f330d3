"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
https://arxiv.org/abs/2206.00364): continuous sigma, ``x = x0 + sigma eps``, and the network
``F`` preconditioned (Table 1):

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4

with ``sd = sigma_data``. ``prediction = "v"`` negates ``c_out`` and ``"sample"`` reads ``F`` as
``D`` itself (as diffusers' ``EDMEulerScheduler`` names them). The grid of training levels is
log-uniform between ``sigma_min`` and ``sigma_max`` (as ComfyUI's ``ModelSamplingContinuousEDM``);
sampling with ``sigmas = "default"`` visits Karras's levels (``rho``), training draws
``ln sigma ~ N(P_mean, P_std^2)`` with the loss weight that makes every level count equally.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

import sfumato


class EDM(sfumato.Formulation):
    """Continuous-sigma formulation with Karras preconditioning; signal scale 1."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["edm"] = "edm"
        sigma_min: float = Field(0.002, gt=0, description="Smallest noise level.")
        sigma_max: float = Field(80.0, gt=0, description="Largest noise level (where sampling starts).")
        sigma_data: float = Field(0.5, gt=0, description="Standard deviation of the data (EDM's sigma_data).")
        prediction: Literal["epsilon", "v", "sample"] = Field(
            "epsilon", description="epsilon: EDM's preconditioned F (diffusers' name); v: F with c_out "
            "negated; sample: the network predicts x0 directly.",
        )
        rho: float = Field(7.0, gt=0, description="Karras schedule exponent of the default sampling levels.")
        timesteps: int = Field(1000, ge=2, description="Size of the log-uniform grid of levels (timestep coordinates).")
        p_mean: float = Field(-1.2, description="Training: mean of ln(sigma) (EDM's P_mean).")
        p_std: float = Field(1.2, gt=0, description="Training: standard deviation of ln(sigma) (EDM's P_std).")

        @model_validator(mode="after")
        def _range(self):
            if self.sigma_min >= self.sigma_max:
                raise ValueError(f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})")
            return self

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.num_timesteps = spec.timesteps
        self._log_min, self._log_max = math.log(spec.sigma_min), math.log(spec.sigma_max)
        self.sigmas = self.sigma_at(torch.arange(spec.timesteps, dtype=torch.float32))  # (T,)
        self.alphas_cumprod = 1 / (1 + self.sigmas**2)  # (T,)

    @property
    def log_sigmas(self) -> Tensor:
        return self.sigmas.log()

    def sigma_at(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0, self.num_timesteps - 1)
        return torch.exp(self._log_min + t / (self.num_timesteps - 1) * (self._log_max - self._log_min))

    def timestep_at(self, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        fraction = (sigma.log() - self._log_min) / (self._log_max - self._log_min)
        return (fraction * (self.num_timesteps - 1)).clamp(0, self.num_timesteps - 1)

    def default_sigmas(self, steps: int) -> Tensor:
        """Karras et al. 2022, Eq. 5, from ``sigma_max`` to ``sigma_min`` (diffusers' ``EDMEulerScheduler``)."""
        spec = self.spec
        levels = sfumato.spacing.karras_sigmas(spec.sigma_min, spec.sigma_max, steps, spec.rho)
        return torch.from_numpy(levels).to(torch.float32)

    # -- the network -------------------------------------------------------------------------------

    def _coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(sigma, c_skip, c_out, c_in)`` at ``t``, shaped to broadcast against ``like``."""
        sd = self.spec.sigma_data
        sigma = sfumato.batch_view(self.sigma_at(t).to(like.device, like.dtype), like)
        c_skip = sd**2 / (sigma**2 + sd**2)
        if self.spec.prediction == "sample":
            c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        else:
            c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
            c_out = -c_out if self.spec.prediction == "v" else c_out
        return sigma, c_skip, c_out, 1 / (sigma**2 + sd**2) ** 0.5

    def network_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma, _, _, c_in = self._coefficients(t, x_t)
        x = x_t * (1 + sigma**2).sqrt()  # the native x0 + sigma eps
        return x * c_in, 0.25 * self.sigma_at(t).to(x_t.device).log()

    def to_prediction(self, output: Tensor, x_t: Tensor, t: Tensor) -> sfumato.Prediction:
        sigma, c_skip, c_out, _ = self._coefficients(t, x_t)
        x = x_t * (1 + sigma**2).sqrt()
        x0 = c_skip * x + c_out * output
        return sfumato.Prediction(x0=x0, eps=(x - x0) / sigma, alpha_bar=1 / (1 + sigma**2))

    def to_output(self, prediction: sfumato.Prediction, x_t: Tensor, t: Tensor) -> Tensor:
        sigma, c_skip, c_out, _ = self._coefficients(t, x_t)
        x = x_t * (1 + sigma**2).sqrt()
        return (prediction.x0 - c_skip * x) / c_out

    # -- training ----------------------------------------------------------------------------------

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``F``'s target ``(x0 - c_skip x) / c_out`` at ``x = x0 + sigma noise`` (EDM Eq. 8);
        with EDM's loss weight ``1 / c_out^2`` on ``D`` this is an unweighted error on ``F``."""
        sigma, c_skip, c_out, _ = self._coefficients(t, x0)
        return (x0 - c_skip * (x0 + sigma * noise)) / c_out

    def sample_training_timesteps(self, random) -> Tensor:
        """``ln sigma ~ N(p_mean, p_std^2)``, clamped to the grid."""
        log_sigma = self.spec.p_mean + self.spec.p_std * random.randn()
        return self.timestep_at(log_sigma.exp())
