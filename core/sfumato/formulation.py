"""``Formulation``: how a denoiser's input, output and time relate to the noise level sigma.

A formulation is the ``[diffusion]`` table of a spec, selected by its ``type`` (``vp`` when none is
given): it belongs to the model, not to the sampler. It plays the part of ComfyUI's
``model_sampling`` classes and k-diffusion's ``external.py`` wrappers: every sampler and guidance
method works on every formulation because they only use the members below, never a branch on
the formulation's type.

Two spaces, one noise level
---------------------------
A formulation's **native space** is ``x = alpha(sigma) x0 + sigma eps`` with the affine signal
scale ``alpha(sigma) = 1 - c sigma`` (``c = signal_slope``):

- ``c = 0``, variance exploding: the VP formulation in k-diffusion's variable
  (``sigma = sqrt((1 - a) / a)``, ``x = x_t / sqrt(a)``), and EDM;
- ``c = 1``, rectified flow: ``x = (1 - sigma) x0 + sigma eps``, ``sigma`` in [0, 1].

For every such ``alpha`` the probability-flow ODE is ``dx/dsigma = (x - x0_hat) / sigma``
(``= eps_hat - c x0_hat``, see ``derivative``), so sigma-space samplers (Euler, Heun, DPM-Solver++,
...) step the native sample unchanged, and the straight line ``alpha x0 + sigma eps`` through a
fixed prediction is what DDIM-like moves follow.

The **model interface** is the variance-preserving normalisation of the same sample,
``x_t = x / sqrt(alpha^2 + sigma^2)``, with ``alpha_bar = alpha^2 / (alpha^2 + sigma^2)``; a
``Predictor`` takes ``(x_t, t)`` and returns a ``Prediction`` (x0 and the true noise eps), so DDPM
and DDIM, written on ``alpha_bar``, also work on every formulation.

``t`` is a coordinate on the formulation's grid of ``num_timesteps`` training levels (fractional
values allowed): ``sigmas[t]`` ascending, ``alphas_cumprod[t]`` the ``alpha_bar`` there.
``network_input`` turns ``(x_t, t)`` into what the network is called with (the VP formulation
passes both through; flow calls the network at ``1000 sigma`` on the native sample; EDM applies
Karras's preconditioning).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import Tensor

from .component import Component
from .conditioning import Conditioning
from .prediction import Prediction


class Formulation(Component, ABC):
    """The noise formulation of a denoiser (``[diffusion]``); see the module docstring.

    Subclasses set ``signal_slope`` and the tables ``sigmas`` / ``alphas_cumprod`` ``[T]`` (float32,
    ascending noise), and implement ``sigma_at``, ``timestep_at``, ``network_input``,
    ``to_prediction``, ``to_output``, ``training_target`` and ``sample_training_timesteps``.
    """

    kind: ClassVar[str] = "formulation"
    #: ``c`` of the native signal scale ``alpha(sigma) = 1 - c sigma``: 0 or 1 (see module docstring).
    signal_slope: ClassVar[float] = 0.0

    num_timesteps: int
    spec: Any
    #: ``[T]`` native noise level of each grid timestep, ascending.
    sigmas: Tensor
    #: ``[T]`` variance-preserving ``alpha_bar`` of each grid timestep, descending.
    alphas_cumprod: Tensor

    def __init__(self, spec: Any):
        self.spec = spec

    # -- noise levels ------------------------------------------------------------------------

    @property
    def sigma_min(self) -> float:
        """The smallest noise level of the grid, ``sigmas[0]``."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest noise level of the grid, ``sigmas[-1]``."""
        return float(self.sigmas[-1])

    @abstractmethod
    def sigma_at(self, t: Tensor) -> Tensor:
        """Native sigma at (possibly fractional) grid timesteps ``t``; same shape."""

    @abstractmethod
    def timestep_at(self, sigma: Tensor) -> Tensor:
        """The fractional grid timestep of native noise level ``sigma`` (clamped to [0, T - 1])."""

    def alpha(self, sigma: Tensor) -> Tensor:
        """The native signal scale ``1 - c sigma`` at ``sigma``."""
        return 1 - self.signal_slope * sigma

    def alpha_bar(self, t: Tensor) -> Tensor:
        """Variance-preserving ``alpha^2 / (alpha^2 + sigma^2)`` at grid timesteps ``t``."""
        sigma = self.sigma_at(t)
        alpha = self.alpha(sigma)
        return alpha**2 / (alpha**2 + sigma**2)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at ``t``."""
        a = self.alpha_bar(t)
        return a / (1 - a)

    def for_sample(self, shape: tuple[int, ...]) -> Formulation:
        """The formulation to sample a batch of ``shape`` ``[B, C, h, w]`` with: itself, unless it
        depends on the resolution (flow matching's dynamic shift)."""
        return self

    def default_sigmas(self, steps: int) -> Tensor | None:
        """The native noise levels (``[steps]``, decreasing) that a sigma-space sampler visits with
        ``sigmas = "default"``; None: the sampler's timestep spacing decides (the VP rule)."""
        return None

    # -- samplers' helpers ---------------------------------------------------------------------

    def derivative(self, prediction: Prediction) -> Tensor:
        """``dx/dsigma`` of the native probability-flow ODE at a prediction: ``eps - c x0``
        (exactly ``eps`` when ``c = 0``, with no extra arithmetic)."""
        if self.signal_slope == 0:
            return prediction.eps
        return prediction.eps - self.signal_slope * prediction.x0

    def noised_native(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """The native sample ``alpha(sigma) x0 + sigma noise``."""
        if self.signal_slope == 0:
            return x0 + sigma * noise
        return torch.addcmul(self.alpha(sigma) * x0, sigma, noise)

    # -- the network ----------------------------------------------------------------------------

    @abstractmethod
    def network_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """What the network is called with for the variance-preserving sample ``x_t`` at grid
        timesteps ``t`` ``[B]``: ``(input, network time [B])``."""

    @abstractmethod
    def to_prediction(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """The network's raw ``output`` at ``(x_t, t)`` as a ``Prediction`` (x0 and eps)."""

    @abstractmethod
    def to_output(self, prediction: Prediction, x_t: Tensor, t: Tensor) -> Tensor:
        """The raw network output that ``to_prediction`` turns into ``prediction`` (its inverse):
        what guidance rescaling works on."""

    def predict(self, denoiser: Callable[..., Tensor], x_t: Tensor, t: Tensor, cond: Conditioning) -> Prediction:
        """Run ``denoiser`` on ``(x_t, t)`` and convert its output."""
        x, time = self.network_input(x_t, t)
        return self.to_prediction(denoiser(x, time, cond), x_t, t)

    # -- training --------------------------------------------------------------------------------

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The variance-preserving ``x_t = sqrt(a) x0 + sqrt(1 - a) noise`` at grid timesteps ``t`` ``[B]``."""
        a = batch_view(self.alpha_bar(t).to(x0.dtype), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    @abstractmethod
    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network should output at ``add_noise(x0, noise, t)``."""

    def loss_weight(self, t: Tensor) -> Tensor:
        """Per-sample weight ``[B]`` of the squared error on the network output (1 by default)."""
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float32))

    @abstractmethod
    def sample_training_timesteps(self, random: TrainingRandom) -> Tensor:
        """Grid timesteps ``[B]`` (float) for one training batch, drawn from ``random`` (the
        training step's per-sample random source: ``randint(low, high)``, ``rand()``, ``randn()``
        each return ``[B]``), so resuming a run draws the same timesteps."""


class TrainingRandom(Protocol):
    """The per-sample random source of a training step (``sfumato.StepContext.random``)."""

    def randint(self, low: int, high: int) -> Tensor: ...

    def rand(self) -> Tensor: ...

    def randn(self, *shape: int) -> Tensor: ...


def batch_view(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values (shape [] or [B]) to broadcast against ``like`` ([B, C, H, W])."""
    if values.ndim == 0:
        return values.reshape([1] * like.ndim)
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))
