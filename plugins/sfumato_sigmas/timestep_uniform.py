"""Schedules even in the model's training timesteps (ComfyUI's ``simple_scheduler``,
``ddim_scheduler`` and ``normal_scheduler``):

- ``simple``: every ``T / N``-th level of the training table, from the last timestep down;
- ``ddim-uniform``: the levels at timesteps ``1 + i * (T // N)``, DDIM's "uniform" discretisation
  (Song et al. 2021) and diffusers' ``leading`` spacing with ``steps_offset = 1``;
- ``normal``: ``N`` timesteps evenly from the last to the first, with the level interpolated
  between training timesteps (the formulation's ``sigma_at``);
- ``sgm-uniform``: as ``normal`` over ``N + 1`` timesteps, the last one dropped, so the run goes
  from the second-smallest spaced level straight to 0.

``simple`` and ``ddim-uniform`` pick levels from the table, so they allow at most ``T`` and ``T - 1``
steps. Where ``T`` is not a multiple of ``N``, ComfyUI's ``ddim_uniform`` adds one more level above
the others (8 for 7 steps of 1000 timesteps); ``ddim-uniform`` keeps exactly ``N``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

import sfumato


class Simple(sfumato.SigmaSchedule):
    """Every ``T / N``-th training level, from the noisiest."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["simple"] = "simple"

    def sigmas(self, formulation, steps):
        table = formulation.sigmas  # (T,) ascending
        if steps > len(table):
            raise self.spec_error(
                f"picks among the model's {len(table)} training levels: at most {len(table)} steps, got {steps}"
            )
        stride = len(table) / steps
        index = [len(table) - 1 - int(i * stride) for i in range(steps)]
        return table[torch.tensor(index)].to(torch.float32)


class DDIMUniform(sfumato.SigmaSchedule):
    """The training levels at timesteps ``1, 1 + T // N, 1 + 2 (T // N), ...``, noisiest first."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["ddim-uniform"] = "ddim-uniform"

    def sigmas(self, formulation, steps):
        table = formulation.sigmas  # (T,) ascending
        index = 1 + max(len(table) // steps, 1) * torch.arange(steps)
        if index[-1] >= len(table):
            raise self.spec_error(
                f"picks among the model's training levels 1 to {len(table) - 1}: at most {len(table) - 1} steps, "
                f"got {steps}"
            )
        return table[index.flip(0)].to(torch.float32)


class Normal(sfumato.SigmaSchedule):
    """``N`` timesteps evenly from the last training timestep to the first."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["normal"] = "normal"

    #: Space ``N + 1`` timesteps and drop the last (``sgm-uniform``).
    drop_last = False

    def sigmas(self, formulation, steps):
        first = float(formulation.timestep_at(torch.tensor(formulation.sigma_max)))
        last = float(formulation.timestep_at(torch.tensor(formulation.sigma_min)))
        # As ComfyUI: a model whose smallest level is 0 ends there, so that level is dropped too
        # (the sampler's final 0 replaces it).
        if self.drop_last or math.isclose(formulation.sigma_min, 0, abs_tol=1e-5):
            timesteps = np.linspace(first, last, steps + 1)[:-1]
        else:
            timesteps = np.linspace(first, last, steps)
        return formulation.sigma_at(torch.from_numpy(timesteps).to(torch.float32)).to(torch.float32)


class SGMUniform(Normal):
    """``N + 1`` timesteps evenly from the last training timestep to the first, the last dropped."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["sgm-uniform"] = "sgm-uniform"

    drop_last = True
