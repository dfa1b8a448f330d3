"""vae-kl matches diffusers' AutoencoderKL on random weights, and converts to and from its folders."""

from __future__ import annotations

import json

import pytest
import torch

from sfumato_vae import AutoencoderKL

CONFIGS = {
    "one-stage": dict(block_out_channels=[8], layers_per_block=1, norm_num_groups=4, latent_channels=4),
    "two-stage-no-attention": dict(
        block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=8, latent_channels=3,
        mid_block_add_attention=False,
    ),
    "sd1-topology-tiny": dict(block_out_channels=[8, 16, 32, 32], layers_per_block=2, norm_num_groups=4),
    "no-quant-convs-shifted": dict(
        block_out_channels=[16, 16], layers_per_block=1, norm_num_groups=8, latent_channels=16,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609,
    ),
}


def images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(params=sorted(CONFIGS))
def pair(request, diffusers_vae, tmp_path):
    """(diffusers reference, sfumato model loaded from the reference's save_pretrained folder)."""
    reference = diffusers_vae(**CONFIGS[request.param])
    reference.save_pretrained(tmp_path / "vae")
    return reference, AutoencoderKL.from_diffusers(tmp_path / "vae").eval()


@torch.no_grad()
def test_posterior_matches_diffusers(pair):
    reference, model = pair
    x = images()
    expected = reference.encode(x).latent_dist
    posterior = model.posterior(x)
    assert (posterior.mean - expected.mean).abs().max() < 1e-4
    assert (posterior.logvar - expected.logvar).abs().max() < 1e-4
    torch.testing.assert_close(posterior.kl(), expected.kl(), rtol=1e-4, atol=1e-3)


@torch.no_grad()
def test_encode_applies_shift_and_scale_to_the_mode_or_a_sample(pair):
    reference, model = pair
    config, x = reference.config, images()
    shift = config.shift_factor or 0.0
    mode = (reference.encode(x).latent_dist.mode() - shift) * config.scaling_factor
    assert (model.encode(x) - mode).abs().max() < 1e-4
    sample = reference.encode(x).latent_dist.sample(torch.Generator().manual_seed(7))
    latents = model.encode(x, generator=torch.Generator().manual_seed(7))
    assert (latents - (sample - shift) * config.scaling_factor).abs().max() < 1e-4


@torch.no_grad()
def test_decode_matches_diffusers(pair):
    reference, model = pair
    config = reference.config
    z = torch.randn(2, config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = reference.decode(z).sample
    assert (model.decode_unscaled(z) - expected).abs().max() < 1e-4
    # decode() takes scaled latents: undo the scale and shift, then decode.
    scaled = (z - (config.shift_factor or 0.0)) * config.scaling_factor
    assert (model.decode(scaled) - expected).abs().max() < 1e-4


@torch.no_grad()
def test_reconstruction_forward_matches_diffusers(pair):
    reference, model = pair
    x = images(batch=1)
    expected = reference(x, sample_posterior=False).sample
    assert (model(x, sample_posterior=False).images - expected).abs().max() < 1e-4


def test_round_trip_through_a_diffusers_folder_is_exact(diffusers_vae, tmp_path):
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL

    model = AutoencoderKL.from_diffusers(_saved(diffusers_vae(**CONFIGS["sd1-topology-tiny"]), tmp_path / "a"))
    model.to_diffusers(tmp_path / "b")
    reference, info = DiffusersAutoencoderKL.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    back = AutoencoderKL.from_diffusers(tmp_path / "b")
    assert back.spec == model.spec
    for key, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    with torch.no_grad():
        z = torch.randn(1, 4, 4, 4)
        assert (reference.eval().decode(z).sample - model.eval().decode_unscaled(z)).abs().max() < 1e-4


def _saved(reference, folder):
    reference.save_pretrained(folder)
    return folder


def test_unsupported_diffusers_config_is_refused_naming_every_problem(diffusers_vae, tmp_path):
    folder = _saved(diffusers_vae(block_out_channels=[8], norm_num_groups=4), tmp_path / "vae")
    config = json.loads((folder / "config.json").read_text())
    config.update(act_fn="relu", latents_mean=[0.0] * 4)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="act_fn is 'relu'") as error:
        AutoencoderKL.from_diffusers(folder)
    assert "latents_mean" in str(error.value)
