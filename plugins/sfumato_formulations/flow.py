"""Rectified flow / flow matching (Liu et al. 2022, https://arxiv.org/abs/2209.03003; Lipman et al.
2022, https://arxiv.org/abs/2210.02747), as Stable Diffusion 3 and Flux are trained.

    x = (1 - sigma) x0 + sigma eps,   the network predicts the velocity v = eps - x0

The grid of ``T`` training levels is ``sigma_j = shift((j + 1) / T)`` with the timestep shift of
SD3 (Esser et al. 2024, https://arxiv.org/abs/2403.03206, Eq. 23)

    shift(s) = k s / (1 + (k - 1) s)

and the network is called on the native sample at time ``1000 sigma``, as diffusers'
``FlowMatchEulerDiscreteScheduler`` passes it. With ``dynamic_shift`` (Flux) ``k = exp(mu)``,
``mu`` linear in the number of image tokens of the batch being sampled (``for_sample``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

import sfumato


class FlowMatching(sfumato.Formulation):
    """Rectified flow with a (possibly resolution-dependent) timestep shift; signal scale ``1 - sigma``."""

    signal_slope = 1.0

    class Spec(sfumato.ComponentSpec):
        type: Literal["flow"] = "flow"
        timesteps: int = Field(1000, ge=2, description="Number of training levels T (the grid sigma = shift(j / T)).")
        shift: float = Field(
            1.0, gt=0, description="Timestep shift k (SD3: 3.0); k > 1 spends more steps at high noise."
        )
        prediction: Literal["velocity"] = Field(
            "velocity", description="What the network predicts: the velocity v = eps - x0 (the only choice)."
        )
        dynamic_shift: bool = Field(
            False, description="Flux's resolution-dependent shift: k = exp(mu), mu linear in the image "
            "tokens between (base_seq_len, base_shift) and (max_seq_len, max_shift); `shift` is then "
            "used for training only.",
        )
        base_shift: float = Field(0.5, description="mu at base_seq_len image tokens (dynamic_shift).")
        max_shift: float = Field(1.15, description="mu at max_seq_len image tokens (dynamic_shift).")
        base_seq_len: int = Field(256, ge=1, description="Image tokens where mu = base_shift (dynamic_shift).")
        max_seq_len: int = Field(4096, ge=1, description="Image tokens where mu = max_shift (dynamic_shift).")
        patch_size: int = Field(2, ge=1, description="Latent pixels per token side, to count image tokens (dynamic_shift).")
        timestep_sampling: Literal["logit-normal", "uniform"] = Field(
            "logit-normal", description="Training density of the unshifted level u in (0, 1): logit-normal "
            "(SD3, Esser et al. 2024 Sec. 3.1) or uniform.",
        )
        logit_mean: float = Field(0.0, description="Mean of logit(u) (logit-normal sampling).")
        logit_std: float = Field(1.0, gt=0, description="Standard deviation of logit(u) (logit-normal sampling).")

        @model_validator(mode="after")
        def _sequence_range(self):
            if self.dynamic_shift and self.max_seq_len <= self.base_seq_len:
                raise ValueError(f"max_seq_len ({self.max_seq_len}) must exceed base_seq_len ({self.base_seq_len})")
            return self

    def __init__(self, spec: Spec, mu: float | None = None):
        super().__init__(spec)
        self.mu = mu
        self.num_timesteps = spec.timesteps
        # The table as diffusers builds it: (1..T) / T in float32, shifted in float32.
        unshifted = torch.from_numpy(np.linspace(1, spec.timesteps, spec.timesteps, dtype=np.float32)) / spec.timesteps
        self.sigmas = self.shift(unshifted)  # (T,)
        alpha = 1 - self.sigmas
        self.alphas_cumprod = alpha**2 / (alpha**2 + self.sigmas**2)  # (T,)

    @property
    def log_sigmas(self) -> Tensor:
        return self.sigmas.log()

    def shift(self, sigma: Tensor) -> Tensor:
        """The shifted level of unshifted ``sigma``: static ``k s / (1 + (k - 1) s)``, or Flux's
        ``exp(mu) / (exp(mu) + 1/s - 1)`` once ``mu`` is known (``for_sample``; training and
        a dynamic formulation not yet given a resolution use the static ``shift``)."""
        if self.mu is not None:
            return math.exp(self.mu) / (math.exp(self.mu) + (1 / sigma - 1))
        k = self.spec.shift
        return k * sigma / (1 + (k - 1) * sigma)

    def unshift(self, sigma: Tensor) -> Tensor:
        """The inverse of ``shift``."""
        k = math.exp(self.mu) if self.mu is not None else self.spec.shift
        return sigma / (k - (k - 1) * sigma)

    def for_sample(self, shape: tuple[int, ...]) -> FlowMatching:
        """With ``dynamic_shift``, the formulation at the resolution of ``shape`` ``[B, C, h, w]``."""
        spec = self.spec
        if not spec.dynamic_shift:
            return self
        tokens = (shape[-2] // spec.patch_size) * (shape[-1] // spec.patch_size)
        slope = (spec.max_shift - spec.base_shift) / (spec.max_seq_len - spec.base_seq_len)
        mu = spec.base_shift + slope * (tokens - spec.base_seq_len)
        return type(self)(spec, mu=mu)

    def sigma_at(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0, self.num_timesteps - 1)
        return self.shift((t + 1) / self.num_timesteps)

    def timestep_at(self, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        return (self.unshift(sigma) * self.num_timesteps - 1).clamp(0, self.num_timesteps - 1)

    def default_sigmas(self, steps: int) -> Tensor:
        """diffusers' ``FlowMatchEulerDiscreteScheduler`` rule: ``steps`` levels evenly (in float64)
        between the bounds of the grid, then shifted, then float32. With a static shift the bounds
        are those of the shifted grid, so the last level is shifted twice, exactly as diffusers
        does; with a dynamic shift they are the unshifted ``1/T`` and 1."""
        T = self.num_timesteps
        if self.mu is not None:
            levels = np.linspace(1.0, 1 / T, steps)
            levels = math.exp(self.mu) / (math.exp(self.mu) + (1 / levels - 1))
        else:
            lo, hi = float(self.sigmas[0]), float(self.sigmas[-1])
            levels = np.linspace(hi * T, lo * T, steps) / T
            k = self.spec.shift
            levels = k * levels / (1 + (k - 1) * levels)
        return torch.from_numpy(levels).to(torch.float32)

    # -- the network -------------------------------------------------------------------------------

    def _levels(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(sigma, alpha, k)`` at ``t``, shaped to broadcast against ``like``; ``k = sqrt(alpha^2 +
        sigma^2)`` turns the variance-preserving sample into the native one."""
        sigma = sfumato.batch_view(self.sigma_at(t).to(like.device, like.dtype), like)
        alpha = 1 - sigma
        return sigma, alpha, (alpha**2 + sigma**2).sqrt()

    def network_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma, _, k = self._levels(t, x_t)
        return x_t * k, self.sigma_at(t).to(x_t.device) * 1000  # as diffusers: timestep = 1000 sigma

    def to_prediction(self, output: Tensor, x_t: Tensor, t: Tensor) -> sfumato.Prediction:
        sigma, alpha, k = self._levels(t, x_t)
        x = x_t * k  # (B, C, h, w) native sample
        x0 = x - sigma * output  # x = (1 - sigma) x0 + sigma eps and v = eps - x0
        eps = x + alpha * output
        return sfumato.Prediction(x0=x0, eps=eps, alpha_bar=(alpha / k) ** 2)

    def to_output(self, prediction: sfumato.Prediction, x_t: Tensor, t: Tensor) -> Tensor:
        return prediction.eps - prediction.x0

    # -- training ----------------------------------------------------------------------------------

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The velocity ``noise - x0``."""
        return noise - x0

    def sample_training_timesteps(self, random) -> Tensor:
        """``u`` logit-normal or uniform in (0, 1), the grid timestep ``u T - 1`` (level ``shift(u)``)."""
        spec = self.spec
        if spec.timestep_sampling == "uniform":
            u = random.rand()
        else:
            u = torch.sigmoid(spec.logit_mean + spec.logit_std * random.randn())
        return (u * self.num_timesteps - 1).clamp(0, self.num_timesteps - 1)
