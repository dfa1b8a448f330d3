"""``sfumato.patch_weight``: several patches on one layer, fused or unfused, on all rows or a range,
add up; any sequence of scale and mode changes and removals ends with the original weight, bit for
bit; an unfused patch acts even where a layer's weight is read without calling it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sfumato


def delta(shape, seed):
    change = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return lambda: change


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patches_add_up_in_any_mode_and_leave_no_trace(dtype):
    torch.manual_seed(0)
    layer = nn.Linear(4, 6).to(dtype)
    original = layer.weight.detach().clone()
    parameter = layer.weight
    first = sfumato.patch_weight(layer, delta((6, 4), 1), scale=0.5, fused=True)
    second = sfumato.patch_weight(layer, delta((2, 4), 2), rows=(2, 4), scale=-1.0, fused=False)
    expected = original.float() + 0.5 * delta((6, 4), 1)()
    expected[2:4] -= delta((2, 4), 2)()
    assert torch.allclose(layer.weight.float(), expected, atol=0.05 if dtype == torch.bfloat16 else 1e-6)
    x = torch.randn(3, 4, dtype=dtype)
    assert torch.allclose(layer(x).float(), nn.functional.linear(x, expected.to(dtype), layer.bias).float(), atol=0.1)

    second.set(fused=True)
    first.set(scale=2.0, fused=False)
    first.set(scale=0.5)
    assert torch.allclose(layer.weight.float(), expected, atol=0.05 if dtype == torch.bfloat16 else 1e-6)
    first.remove()
    second.remove()
    assert type(layer) is nn.Linear and layer.weight is parameter
    assert torch.equal(layer.weight, original)
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_an_unfused_patch_acts_where_the_weight_is_read_directly():
    layer = nn.Linear(4, 4)
    sfumato.patch_weight(layer, delta((4, 4), 3), fused=False)
    x = torch.randn(2, 4)
    read = nn.functional.linear(x, layer.weight, layer.bias)  # as the U-Net's fused q/k/v matmul reads it
    assert torch.allclose(read, layer(x))
    assert not torch.allclose(read, nn.functional.linear(x, layer.parametrizations.weight.original, layer.bias))


def test_gradients_reach_an_unfused_patch():
    """Runtime mode is what training a LoRA needs: the factors get gradients, the layer none."""
    layer = nn.Linear(4, 4).requires_grad_(False)
    up, down = torch.zeros(4, 2, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    sfumato.patch_weight(layer, lambda: up @ down, fused=False)
    layer(torch.randn(3, 4)).sum().backward()
    assert up.grad is not None and up.grad.abs().sum() > 0
