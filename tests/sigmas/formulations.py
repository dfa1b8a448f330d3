"""The two formulations every sigma schedule is tested on.

``stable_diffusion()`` is the variance-preserving schedule of Stable Diffusion (``scaled_linear``,
0.00085 to 0.012, 1000 timesteps). ``FakeFormulation`` exposes only the ``sfumato.NoiseLevels``
members, over another range (0.002 to 80, as EDM) with 500 timesteps and a table that is neither
VP-shaped nor log-uniform: a schedule that reached for anything else (``alphas_cumprod``,
``spec``, a hard-coded 1000) fails or gives other values on it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

import sfumato


def stable_diffusion() -> sfumato.NoiseSchedule:
    return sfumato.NoiseSchedule(sfumato.DiffusionSpec(betas="scaled_linear", beta_start=0.00085, beta_end=0.012))


class FakeFormulation:
    """``log sigma_t = log 0.002 + (log 80 - log 0.002) (t / (T - 1))^0.8`` for ``T = 500``;
    fractional timesteps interpolate linearly in log-sigma, as ComfyUI's ``ModelSamplingDiscrete``."""

    __slots__ = ("sigma_min", "sigma_max", "sigmas", "num_timesteps", "_log_sigmas")

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, num_timesteps: int = 500):
        ramp = torch.linspace(0, 1, num_timesteps, dtype=torch.float64) ** 0.8
        log_sigmas = math.log(sigma_min) + (math.log(sigma_max) - math.log(sigma_min)) * ramp
        self.sigmas = log_sigmas.exp().to(torch.float32)  # (T,) ascending
        self._log_sigmas = self.sigmas.log()
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])
        self.num_timesteps = num_timesteps

    def sigma_at(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = t.ceil().long()
        weight = t - low
        return ((1 - weight) * self._log_sigmas[low] + weight * self._log_sigmas[high]).exp()

    def timestep_at(self, sigma: Tensor) -> Tensor:
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log().double().numpy()
        t = np.interp(log_sigma, self._log_sigmas.double().numpy(), np.arange(self.num_timesteps))
        return torch.as_tensor(t, dtype=torch.float32)
