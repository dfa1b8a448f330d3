"""``NoiseSchedule``: the variance-preserving formulation (``[diffusion] type = "vp"``, the default).

Discrete betas (linear, scaled_linear, cosine), alphas_cumprod and the prediction type (epsilon,
v, sample): DDPM's and Stable Diffusion's formulation. Its native sigma is k-diffusion's
``sqrt((1 - a) / a)`` with signal scale 1; the model sees ``x_t`` and ``t`` as they are. The other
formulations (flow matching, EDM) are plugins of the same ``Formulation`` kind; this one lives in
the core because every spec without a ``[diffusion] type`` uses it.

Schedules may be added, never changed: a checkpoint trained with ``scaled_linear`` must sample
the same way in every later release.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from .component import ComponentSpec
from .formulation import Formulation, TrainingRandom, batch_view
from .prediction import Prediction

BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
PredictionType = Literal["epsilon", "v", "sample"]


class DiffusionSpec(ComponentSpec):
    """The ``[diffusion]`` table of the variance-preserving formulation (``type = "vp"``, the
    default): the training-time noise schedule of the denoiser."""

    type: Literal["vp"] = "vp"
    timesteps: int = Field(1000, ge=1, description="Number of training timesteps T.")
    betas: BetaSchedule = Field(
        "scaled_linear",
        description="linear (DDPM, Ho et al. 2020), scaled_linear (Stable Diffusion) or cosine "
        "(Nichol & Dhariwal 2021, 'squaredcos_cap_v2' in diffusers).",
    )
    beta_start: float = Field(0.00085, gt=0, lt=1, description="First beta (linear schedules).")
    beta_end: float = Field(0.012, gt=0, lt=1, description="Last beta (linear schedules).")
    prediction: PredictionType = Field(
        "epsilon", description="What the network predicts: epsilon, v (v-prediction) or sample (x0)."
    )
    zero_terminal_snr: bool = Field(
        False,
        description="Rescale betas so the last timestep has zero SNR (Lin et al. 2023, "
        "'Common Diffusion Noise Schedules and Sample Steps are Flawed').",
    )

    @model_validator(mode="after")
    def _betas_grow(self) -> DiffusionSpec:
        """Linear schedules grow from ``beta_start`` to ``beta_end``; a falling or flat one is no
        schedule a model is trained with (the two values are almost certainly swapped), and it
        would only fail later, inside the sampler."""
        if self.betas != "cosine" and self.beta_start >= self.beta_end:
            raise ValueError(f"beta_start ({self.beta_start}) must be smaller than beta_end ({self.beta_end}) "
                             f"for betas = {self.betas!r} (Stable Diffusion: 0.00085 and 0.012; DDPM: 0.0001 and 0.02)")
        return self


def make_betas(spec: DiffusionSpec) -> Tensor:
    """Betas in float32, computed exactly as diffusers does for the same named schedule."""
    n = spec.timesteps
    if spec.betas == "linear":
        betas = torch.linspace(spec.beta_start, spec.beta_end, n, dtype=torch.float32)
    elif spec.betas == "scaled_linear":
        betas = torch.linspace(spec.beta_start**0.5, spec.beta_end**0.5, n, dtype=torch.float32) ** 2
    else:  # cosine: alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2, betas capped at 0.999
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
            dtype=torch.float32,
        )
    if spec.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Shift and scale sqrt(alphas_cumprod) so the first value is kept and the last is zero
    (Lin et al. 2023, Algorithm 1)."""
    alphas_bar_sqrt = (1.0 - betas).cumprod(dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    # The operation order matches diffusers' ``rescale_zero_terminal_snr`` bit for bit.
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


class NoiseSchedule(Formulation):
    """The forward process ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with ``a_t = alphas_cumprod[t]``.

    Timesteps may be fractional (Karras sigmas land between training timesteps): values between
    integers are interpolated linearly in log-sigma, the inverse of ``timestep_at(sigma)``, as
    k-diffusion and diffusers do. Integer timesteps index ``alphas_cumprod`` exactly.
    """

    Spec = DiffusionSpec

    def __init__(self, spec: DiffusionSpec | None = None):
        self.spec = spec or DiffusionSpec()
        self.betas = make_betas(self.spec)  # (T,)
        self.alphas_cumprod = (1.0 - self.betas).cumprod(dim=0)  # (T,)
        # sigma_t = sqrt((1 - a_t) / a_t): the noise level in the k-diffusion parameterisation.
        # A zero-terminal-SNR schedule has a_{T-1} = 0, an infinite sigma no sigma-space sampler
        # can start from; like diffusers' EulerDiscreteScheduler, the sigma table uses 2^-24 there.
        # alpha_bar(t) uses the same capped value, so that a model called at the last timestep
        # is converted at the noise level a sampler actually gave it (the cap moves the SNR from
        # 0 to 3.6e-15); the ``alphas_cumprod`` table itself stays exact.
        self.finite_alphas_cumprod = self.alphas_cumprod.clone()
        if self.spec.zero_terminal_snr:
            self.finite_alphas_cumprod[-1] = 2.0**-24
        finite = self.finite_alphas_cumprod
        self.sigmas = ((1 - finite) / finite) ** 0.5  # (T,)
        self.log_sigmas = self.sigmas.log()
        # What alpha_bar(t) reads for t in [i, i + 1), gathered in one lookup: alpha_bar_i and
        # -2 log sigma at i and i + 1 (sigmoid(-2 log sigma) = 1 / (1 + sigma^2)). Scaling by -2 is
        # exact, so interpolating these equals -2 times interpolating log sigma, bit for bit.
        upper = torch.cat([self.log_sigmas[1:], self.log_sigmas[-1:]])
        self._alpha_bar_rows = torch.stack([finite, -2 * self.log_sigmas, -2 * upper], dim=-1)  # (T, 3)
        self._rows_on: dict[torch.device, Tensor] = {}

    @classmethod
    def from_spec(cls, spec: DiffusionSpec | dict) -> NoiseSchedule:
        return cls(spec if isinstance(spec, DiffusionSpec) else DiffusionSpec.model_validate(spec))

    @property
    def num_timesteps(self) -> int:
        return self.spec.timesteps

    @property
    def prediction(self) -> PredictionType:
        return self.spec.prediction

    # -- noise levels ------------------------------------------------------------------------

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``alphas_cumprod`` at (possibly fractional) timesteps ``t``; same shape as ``t``."""
        t = torch.as_tensor(t)
        rows = self._alpha_bar_rows
        if rows.device != t.device:  # one copy per device, so the sampling loop moves nothing
            on_device = self._rows_on.get(t.device)
            if on_device is None:  # not setdefault: its default argument would copy on every call
                on_device = self._rows_on[t.device] = rows.to(t.device)
            rows = on_device
        low = t.floor().clamp_(0, self.num_timesteps - 1)
        weight = (t - low).to(torch.float32)
        exact, low_value, high_value = rows[low.long()].unbind(-1)  # alpha_bar, -2 log sigma at low and low + 1
        interpolated = torch.lerp(low_value, high_value, weight).sigmoid_()  # 1 / (1 + sigma^2)
        return torch.where(weight == 0, exact, interpolated)

    def sigma_at(self, t: Tensor) -> Tensor:
        """sigma at (possibly fractional) timesteps ``t``: the table value at integers, linear in
        log-sigma between them (so ``sigma_at(timestep_at(s)) == s``); finite even where a
        zero-terminal-SNR ``alpha_bar`` is 0 (see ``sigmas``)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        low = t.floor().clamp(0, self.num_timesteps - 1)
        weight = t - low
        low = low.long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        log_sigmas = self.log_sigmas.to(t.device)
        interpolated = torch.lerp(log_sigmas[low], log_sigmas[high], weight).exp()
        return torch.where(weight == 0, self.sigmas.to(t.device)[low], interpolated)

    def timestep_at(self, sigma: Tensor) -> Tensor:
        """The fractional timestep whose sigma is ``sigma`` (linear in log-sigma between the two
        neighbouring training timesteps; clamped to [0, T - 1])."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log()
        log_sigmas = self.log_sigmas.to(sigma.device)
        dists = log_sigma.reshape(-1, 1) - log_sigmas.reshape(1, -1)  # (N, T)
        low = (dists >= 0).cumsum(dim=1).argmax(dim=1).clamp(max=self.num_timesteps - 2)
        high = low + 1
        low_v, high_v = log_sigmas[low], log_sigmas[high]
        w = ((low_v - log_sigma.reshape(-1)) / (low_v - high_v)).clamp(0, 1)
        return ((1 - w) * low + w * high).reshape(sigma.shape)

    # -- forward process and training targets -----------------------------------------------

    def sample_training_timesteps(self, random: TrainingRandom) -> Tensor:
        """Uniform integer timesteps in ``[0, T)`` (Ho et al. 2020)."""
        return random.randint(0, self.num_timesteps).float()

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network should output at ``(x_t, t)`` for its prediction type."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "sample":
            return x0
        a = batch_view(self.alpha_bar(t).to(x0.dtype), x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    # -- conversions --------------------------------------------------------------------------

    def network_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The network sees the variance-preserving sample and the timestep as they are."""
        return x_t, t

    def to_prediction(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """Turn the network's raw ``output`` at ``(x_t, t)`` into a ``Prediction`` (x0 and eps)."""
        a = batch_view(self.alpha_bar(t).to(x_t.dtype), x_t)
        sqrt_a, sqrt_1ma = a.sqrt(), (1 - a).sqrt()
        if self.prediction == "epsilon":
            eps = output
            x0 = (x_t - sqrt_1ma * eps) / sqrt_a
        elif self.prediction == "sample":
            x0 = output
            eps = (x_t - sqrt_a * x0) / sqrt_1ma
        else:  # v = sqrt(a) eps - sqrt(1 - a) x0
            x0 = sqrt_a * x_t - sqrt_1ma * output
            eps = sqrt_a * output + sqrt_1ma * x_t
        return Prediction(x0=x0, eps=eps, alpha_bar=a)

    def to_output(self, prediction: Prediction, x_t: Tensor, t: Tensor) -> Tensor:
        """eps, v or x0 of ``prediction``, as the network predicts."""
        if self.prediction == "epsilon":
            return prediction.eps
        if self.prediction == "v":
            return prediction.v
        return prediction.x0

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.spec!r})"

