"""Fixtures of the VAE tests: random-weight reference models from diffusers."""

from __future__ import annotations

import pytest
import torch


def perturb(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter, so norms, biases and 1x1 convs are all non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture
def diffusers_vae():
    """``make(seed=0, **config)``: a diffusers ``AutoencoderKL`` with random weights."""
    from diffusers import AutoencoderKL

    def make(seed: int = 0, **config) -> torch.nn.Module:
        stages = len(config.get("block_out_channels", [64]))
        config = {"down_block_types": ["DownEncoderBlock2D"] * stages,
                  "up_block_types": ["UpDecoderBlock2D"] * stages, **config}
        torch.manual_seed(seed)
        return perturb(AutoencoderKL(**config), seed).eval()

    return make
