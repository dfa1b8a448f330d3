"""vae-kl: the Autoencoder contract, the posterior, scaling, slicing, tiling and weights files."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import sfumato
from sfumato.testing import AutoencoderConformance
from sfumato_vae import AutoencoderKL, DiagonalGaussian

TINY = {"type": "vae-kl", "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4}


class TestAutoencoderKLConformance(AutoencoderConformance):
    spec = TINY
    component_class = AutoencoderKL
    image_size = 16


def build(**fields) -> AutoencoderKL:
    torch.manual_seed(0)
    model = AutoencoderKL.from_spec({**TINY, **fields}).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def images(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def stationary(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """White noise: every tile has the same statistics as the whole input.

    A tile's GroupNorms normalise with that tile's statistics; on random weights even a smooth
    input gives tiles statistics far from the whole image's (40-70 % error when tiling a
    sinusoid), so closeness is checked on a statistically uniform input instead."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_registered_and_built_through_the_registry():
    model = sfumato.build("autoencoder", {**TINY, "latent_channels": 6})
    assert isinstance(model, AutoencoderKL)
    assert (model.latent_channels, model.downscale) == (6, 2)


def test_defaults_are_the_stable_diffusion_1_architecture():
    with torch.device("meta"):
        model = AutoencoderKL.from_spec({})
    assert model.downscale == 8 and model.latent_channels == 4
    assert model.spec.scaling_factor == 0.18215
    assert sum(p.numel() for p in model.parameters()) == 83_653_863  # the SD 1.x VAE


def test_groups_must_divide_every_width():
    with pytest.raises(ValidationError, match="norm_num_groups=32 must divide"):
        AutoencoderKL.Spec(block_out_channels=[8, 64])


@torch.no_grad()
def test_encode_returns_the_scaled_mode_without_a_generator():
    model = build(scaling_factor=0.5, shift_factor=0.25)
    posterior = model.posterior(images())
    assert torch.equal(model.encode(images()), (posterior.mean - 0.25) * 0.5)
    assert torch.allclose(model.decode(model.encode(images())), model.decode_unscaled(posterior.mean), atol=1e-5)


@torch.no_grad()
def test_encode_samples_with_a_generator_or_sample_posterior():
    model = build()
    a = model.encode(images(), generator=torch.Generator().manual_seed(3))
    b = model.encode(images(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, model.encode(images()))
    sampling = build(sample_posterior=True)
    assert not torch.equal(sampling.encode(images()), sampling.encode(images()))


def test_kl_against_the_prior_matches_torch_distributions():
    moments = torch.randn(2, 8, 3, 3)
    posterior = DiagonalGaussian(moments)
    normal = torch.distributions.Normal(posterior.mean, posterior.std)
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(0.0, 1.0)).sum((1, 2, 3))
    torch.testing.assert_close(posterior.kl(), expected)
    assert torch.allclose(posterior.kl(posterior), torch.zeros(2), atol=1e-5)
    z = posterior.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(posterior.nll(z), -normal.log_prob(z).sum((1, 2, 3)))


def test_training_forward_reconstructs_and_backpropagates():
    model = build().train()
    out = model(images(), generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 16, 16) and out.posterior.kl().shape == (2,)
    loss = (out.images - images()).pow(2).mean() + 1e-6 * out.posterior.kl().mean()
    loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_slicing_gives_the_same_result_one_image_at_a_time():
    model = build()
    x = images(batch=3)
    latents, decoded = model.encode(x), model.decode(model.encode(x))
    model.enable_slicing()
    torch.testing.assert_close(model.encode(x), latents, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.decode(latents), decoded, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_tiled_decoding_is_each_tile_outside_the_overlaps():
    model = build(block_out_channels=[8, 16, 16])  # downscale 4
    z = stationary((1, 4, 24, 24))
    tiled = model.enable_tiling(tile_latent_size=12, overlap=4).decode(z)
    # tiles start at latent rows/columns 0, 6, 12: output pixels < 24 belong to the first only
    model.enable_tiling(False)
    assert torch.equal(tiled[..., :24, :24], model.decode(z[..., :12, :12])[..., :24, :24])
    assert torch.equal(tiled[..., -24:, -24:], model.decode(z[..., 12:, 12:])[..., -24:, -24:])


@torch.no_grad()
def test_tiled_decoding_is_close_to_untiled_and_overlap_helps():
    model = build(block_out_channels=[8, 16, 16])
    z = stationary((1, 4, 32, 32))
    full = model.decode(z)
    blended = model.enable_tiling(tile_latent_size=16, overlap=8).decode(z)
    butted = model.enable_tiling(tile_latent_size=16, overlap=0).decode(z)
    assert blended.shape == full.shape == (1, 3, 128, 128)
    error, seams = (blended - full).abs(), (butted - full).abs()
    assert error.mean() < 0.12 * full.abs().mean() and error.max() < 0.2 * full.abs().max()  # 0.09, 0.15
    assert error.max() < 0.5 * seams.max()
    model.enable_tiling(tile_latent_size=32)  # one tile covers it all: exact
    assert torch.equal(model.decode(z), full)


@torch.no_grad()
def test_tiled_encoding_is_close_to_untiled():
    model = build(block_out_channels=[8, 16, 16])
    x = stationary((1, 3, 96, 96)).clamp(-1, 1)
    full = model.encode(x)
    tiled = model.enable_tiling(tile_latent_size=12, overlap=4).encode(x)
    assert tiled.shape == full.shape == (1, 4, 24, 24)
    assert (tiled - full).abs().mean() < 0.2 * full.abs().mean()  # measured 0.15


@torch.no_grad()
def test_math_attention_matches_sdpa():
    model = build()
    x = images()
    expected = model.decode(model.encode(x))
    model.set_attention_backend("math")
    torch.testing.assert_close(model.decode(model.encode(x)), expected, atol=1e-5, rtol=1e-5)


def test_weights_file_records_its_spec_and_mismatches_are_listed(tmp_path):
    model = build()
    path = sfumato.save_component(model, tmp_path / "vae.safetensors")
    recorded = sfumato.read_component_spec(path)
    assert AutoencoderKL.Spec.model_validate(recorded) == model.spec
    loaded = AutoencoderKL.from_spec({**recorded, "weights": str(path)})
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(sfumato.WeightsError, match=r"(?s)mis-shaped.*encoder\.conv_out\.weight: file \(8, 16, 3, 3\) vs model \(6, 16, 3, 3\)"):
        AutoencoderKL.from_spec({**TINY, "latent_channels": 3, "weights": str(path)})
