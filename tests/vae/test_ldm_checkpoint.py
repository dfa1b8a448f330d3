"""vae-kl loads the autoencoder of Stable Diffusion 1.x single-file checkpoints (LDM key names).

The checkpoints are written here with random weights, in the original Latent Diffusion layout,
by a helper that knows nothing of sfumato's key names; diffusers' own LDM converter gives the
reference model.
"""

from __future__ import annotations

import json

import pytest
import torch

import sfumato
from sfumato_vae import SD1_CONFIG, AutoencoderKL, sd1_spec, vae_state_dict_from_ldm

SMALL = dict(block_out_channels=[8, 16, 32], layers_per_block=2, norm_num_groups=4, latent_channels=4)


def ldm_vae_state_dict(
    block_out_channels: list[int], layers_per_block: int, latent_channels: int, seed: int = 0,
    prefix: str = "first_stage_model.",
) -> dict[str, torch.Tensor]:
    """Random weights under the key names and shapes of ``ldm.models.autoencoder.AutoencoderKL``."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def add(name: str, *shape: int) -> None:
        scale = 1.0 if name.endswith("norm.weight") or "norm1.weight" in name or "norm2.weight" in name else 0.0
        state[prefix + name] = scale + torch.randn(shape, generator=g) * (0.05 if scale else 0.1)

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        add(f"{name}.weight", cout, cin, k, k)
        add(f"{name}.bias", cout)

    def norm(name: str, c: int) -> None:
        add(f"{name}.weight", c)
        add(f"{name}.bias", c)

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    def mid(half: str, c: int) -> None:
        resnet(f"{half}.mid.block_1", c, c)
        norm(f"{half}.mid.attn_1.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            conv(f"{half}.mid.attn_1.{proj}", c, c, 1)
        resnet(f"{half}.mid.block_2", c, c)

    widths, last = block_out_channels, len(block_out_channels) - 1
    conv("encoder.conv_in", widths[0], 3, 3)
    cin = widths[0]
    for level, width in enumerate(widths):
        for block in range(layers_per_block):
            resnet(f"encoder.down.{level}.block.{block}", cin, width)
            cin = width
        if level != last:
            conv(f"encoder.down.{level}.downsample.conv", width, width, 3)
    mid("encoder", widths[-1])
    norm("encoder.norm_out", widths[-1])
    conv("encoder.conv_out", 2 * latent_channels, widths[-1], 3)
    conv("quant_conv", 2 * latent_channels, 2 * latent_channels, 1)
    conv("post_quant_conv", latent_channels, latent_channels, 1)
    conv("decoder.conv_in", widths[-1], latent_channels, 3)
    mid("decoder", widths[-1])
    cin = widths[-1]
    for level in reversed(range(len(widths))):  # LDM numbers decoder levels from the top resolution
        for block in range(layers_per_block + 1):
            resnet(f"decoder.up.{level}.block.{block}", cin, widths[level])
            cin = widths[level]
        if level != 0:
            conv(f"decoder.up.{level}.upsample.conv", widths[level], widths[level], 3)
    norm("decoder.norm_out", widths[0])
    conv("decoder.conv_out", 3, widths[0], 3)
    return state


def diffusers_config(block_out_channels, layers_per_block, norm_num_groups, latent_channels) -> dict:
    stages = len(block_out_channels)
    return dict(
        block_out_channels=block_out_channels, layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups, latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * stages, up_block_types=["UpDecoderBlock2D"] * stages,
    )


@pytest.fixture
def small_checkpoint(tmp_path):
    """A single-file checkpoint: a small VAE under ``first_stage_model.`` plus a U-Net entry."""
    state = ldm_vae_state_dict(SMALL["block_out_channels"], SMALL["layers_per_block"], SMALL["latent_channels"])
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    path = sfumato.save_weights(state, tmp_path / "sd.safetensors")
    config = tmp_path / "vae_config.json"
    config.write_text(json.dumps(diffusers_config(**SMALL)))
    return path, config, state


@torch.no_grad()
def test_small_ldm_checkpoint_matches_diffusers_conversion(small_checkpoint):
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path, config, state = small_checkpoint
    model = AutoencoderKL.from_ldm(path, config=config).eval()
    reference = DiffusersAutoencoderKL(**diffusers_config(**SMALL)).eval()
    reference.load_state_dict(convert_ldm_vae_checkpoint(state, reference.config), strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert (model.posterior(x).mean - reference.encode(x).latent_dist.mean).abs().max() < 1e-4
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert (model.decode_unscaled(z) - reference.decode(z).sample).abs().max() < 1e-4


def test_attention_projections_are_reshaped_from_1x1_convs(small_checkpoint):
    path, config, state = small_checkpoint
    model = AutoencoderKL.from_ldm(path, config=config)
    conv = state["first_stage_model.decoder.mid.attn_1.proj_out.weight"]
    assert conv.shape == (32, 32, 1, 1)
    assert torch.equal(model.decoder.mid.attention.to_out.weight, conv[:, :, 0, 0])


def test_missing_and_unexpected_ldm_keys_are_listed(tmp_path, small_checkpoint):
    _, config, state = small_checkpoint
    del state["first_stage_model.encoder.mid.attn_1.q.bias"]
    state["first_stage_model.encoder.extra.weight"] = torch.zeros(1)
    path = sfumato.save_weights(state, tmp_path / "broken.safetensors")
    with pytest.raises(sfumato.WeightsError) as error:
        AutoencoderKL.from_ldm(path, config=config)
    assert "1 missing key(s):\n    encoder.mid.attention.to_q.bias" in str(error.value)
    assert "1 unexpected key(s):\n    encoder.extra.weight" in str(error.value)


def test_pickle_checkpoints_need_explicit_permission(tmp_path, small_checkpoint):
    _, config, state = small_checkpoint
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(sfumato.WeightsError, match="allow_pickle=True"):
        AutoencoderKL.from_ldm(path, config=config)
    model = AutoencoderKL.from_ldm(path, config=config, allow_pickle=True)
    assert torch.equal(model.encoder.conv_in.weight, state["first_stage_model.encoder.conv_in.weight"])


@pytest.mark.slow
def test_full_size_sd15_vae_loads_with_no_missing_or_unexpected_key(tmp_path):
    spec = sd1_spec()
    state = ldm_vae_state_dict(spec.block_out_channels, spec.layers_per_block, spec.latent_channels)
    path = sfumato.save_weights(state, tmp_path / "v1-5.safetensors")
    model = AutoencoderKL.from_ldm(path)  # the shipped SD 1.x config
    assert sum(p.numel() for p in model.parameters()) == 83_653_863
    assert len(vae_state_dict_from_ldm(state)) == len(state) == 248
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = json.loads(SD1_CONFIG.read_text())
    reference = DiffusersAutoencoderKL.from_config(config).eval()
    reference.load_state_dict(convert_ldm_vae_checkpoint(state, reference.config), strict=True)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model.eval().decode_unscaled(z)
        assert images.shape == (1, 3, 64, 64)
        assert (images - reference.decode(z).sample).abs().max() < 1e-4
