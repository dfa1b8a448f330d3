"""A stochastic sampler's noise: drawn for every step before the loop, with the values per-step
draws from the run's generator give (so seeds keep their images)."""

from __future__ import annotations

import torch

from sfumato.sampling import step_noise


def test_step_noise_is_what_per_step_draws_give():
    shape = (2, 4, 5, 3)  # 120 values a step: not a multiple of torch's 16-value normal blocks
    generator = torch.Generator().manual_seed(3)
    expected = torch.stack([torch.randn(shape, generator=generator) for _ in range(6)])
    drawn = step_noise(6, shape, torch.Generator().manual_seed(3), "cpu", torch.float64)
    assert drawn.shape == (6, *shape) and drawn.dtype == torch.float64
    assert torch.equal(drawn.float(), expected)
