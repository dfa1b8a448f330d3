"""Plans for the samplers that keep x as the variance-preserving sample (DDPM, DDIM).

Such a sampler steps from timestep ``t`` to a previous timestep ``s`` using ``alpha_bar`` at both;
the plan carries those two tables per step so that ``step`` only indexes tensors.
"""

from __future__ import annotations

import numpy as np
import torch

import sfumato



def variance_preserving_plan(
    schedule: sfumato.Formulation,
    timesteps: np.ndarray,
    previous: np.ndarray,
    final_alpha_bar: float,
) -> sfumato.SamplingPlan:
    """A full-strength plan stepping from each of ``timesteps`` to the matching ``previous``
    timestep (integers; a negative one means "clean", where ``alpha_bar`` is ``final_alpha_bar``);
    the caller cuts it with ``keep_strength`` once its own tables are added.

    ``extra`` holds ``alpha_bar`` and ``alpha_bar_prev`` ``[N]``; ``sigmas`` ``[N + 1]`` are the
    noise levels of x before the first step and after each step; ``init_noise_sigma`` is 1.
    """
    table = schedule.alphas_cumprod
    t = torch.from_numpy(timesteps).long()  # (N,)
    prev = torch.from_numpy(previous).long()  # (N,)
    alpha_bar = table[t]
    alpha_bar_prev = torch.where(prev >= 0, table[prev.clamp(min=0)], torch.tensor(final_alpha_bar))
    levels = torch.cat([alpha_bar[:1], alpha_bar_prev])  # (N + 1,)
    return sfumato.SamplingPlan(
        timesteps=t.to(torch.float32),
        sigmas=((1 - levels) / levels).sqrt(),
        init_noise_sigma=1.0,
        schedule=schedule,
        extra={"alpha_bar": alpha_bar, "alpha_bar_prev": alpha_bar_prev},
    )
