"""``sfumato.nn``, the layers plugins share, computes what diffusers' counterparts compute, under
the same parameter names, so diffusers weights load into it unchanged."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

import sfumato


@pytest.mark.parametrize("dim", [32, 33])
@pytest.mark.parametrize("flip_sin_to_cos, shift", [(True, 0.0), (False, 1.0), (True, 1.0)])
def test_timestep_embedding_equals_diffusers(dim, flip_sin_to_cos, shift):
    timesteps = torch.tensor([0.0, 1.0, 250.5, 999.0])
    ours = sfumato.nn.timestep_embedding(timesteps, dim, flip_sin_to_cos, shift)
    reference = get_timestep_embedding(timesteps, dim, flip_sin_to_cos=flip_sin_to_cos, downscale_freq_shift=shift)
    assert ours.shape == (4, dim)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_timestep_mlp_equals_diffusers():
    torch.manual_seed(0)
    reference = TimestepEmbedding(16, 64)
    torch.manual_seed(0)
    mlp = sfumato.nn.TimestepEmbedding(16, 64)
    assert list(mlp.state_dict()) == list(reference.state_dict())
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(mlp(x), reference(x))


@pytest.mark.parametrize("in_channels, embed_dim", [(8, 12), (16, 12), (8, None)])
def test_resnet_block_equals_diffusers_resnet_block_2d(in_channels, embed_dim):
    torch.manual_seed(0)
    reference = ResnetBlock2D(in_channels=in_channels, out_channels=16, temb_channels=embed_dim, groups=4, eps=1e-6)
    torch.manual_seed(0)
    block = sfumato.nn.ResnetBlock(in_channels, 16, groups=4, eps=1e-6, embed_dim=embed_dim)
    # the same names and the same initialisation under a seed
    assert list(block.state_dict()) == list(reference.state_dict())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(block.state_dict()[name], tensor), name
    x = torch.randn(2, in_channels, 8, 8)
    embedding = torch.randn(2, embed_dim) if embed_dim else None
    with torch.no_grad():
        torch.testing.assert_close(block(x, embedding), reference(x, embedding), rtol=0, atol=1e-6)


def test_a_subclass_renames_the_optional_layers_and_computes_the_same():
    class Renamed(sfumato.nn.ResnetBlock):
        shortcut_name = "skip"
        embedding_name = "embed"

    torch.manual_seed(0)
    block = sfumato.nn.ResnetBlock(8, 16, groups=4, eps=1e-5, embed_dim=12)
    renamed = Renamed(8, 16, groups=4, eps=1e-5, embed_dim=12)
    keys = list(renamed.state_dict())
    assert "skip.weight" in keys and "embed.weight" in keys
    assert not any(k.startswith(("conv_shortcut.", "time_emb_proj.")) for k in keys)
    renames = {"conv_shortcut": "skip", "time_emb_proj": "embed"}
    renamed.load_state_dict({renames.get(k.split(".")[0], k.split(".")[0]) + k[k.index("."):]: v
                             for k, v in block.state_dict().items()})
    x, embedding = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    with torch.no_grad():
        assert torch.equal(renamed(x, embedding), block(x, embedding))


@pytest.mark.parametrize("padding", [0, 1])
def test_downsample_equals_diffusers(padding):
    reference = Downsample2D(8, use_conv=True, padding=padding)
    ours = sfumato.nn.Downsample(8, padding=padding)
    # diffusers registers its convolution twice, as `conv` and under the legacy name `Conv2d_0`
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k.startswith("conv.")})
    x = torch.randn(2, 8, 9, 8)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


@pytest.mark.parametrize("size", [None, (9, 7)])
def test_upsample_equals_diffusers(size):
    reference = Upsample2D(8, use_conv=True)
    ours = sfumato.nn.Upsample(8)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, 5, 4)
    with torch.no_grad():
        assert torch.equal(ours(x, size), reference(x, output_size=size))
