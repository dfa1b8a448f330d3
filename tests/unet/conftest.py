"""Shared fixtures of the U-Net tests."""

import pytest
import torch


@pytest.fixture
def perturb():
    """Move every parameter of a module away from its initialisation (GroupNorm weights 1, biases 0, ...),
    so a parity test fails if any parameter is misplaced."""

    def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)
        return module.eval()

    return perturb
