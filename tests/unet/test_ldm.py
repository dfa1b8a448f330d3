"""Stable Diffusion 1.x single-file checkpoints (original LDM key names) load into the U-Net."""

import pytest
import torch

import sfumato
from sfumato_unet import (
    UNet, diffusers_config_from_spec, spec_from_diffusers_config, unet_config, unet_state_dict_from_ldm,
    unet_state_dict_to_ldm,
)

# The SD 1.x topology at tiny widths (3 cross-attention levels + 1 plain, 2 layers per block).
SD_TINY = unet_config("sd15").model_copy(
    update=dict(block_out_channels=[16, 16, 32, 32], cross_attention_dim=32, attention_heads=4, norm_num_groups=8)
)
# What else a single-file checkpoint holds; the U-Net loader must ignore it.
OTHER_COMPONENTS = {
    "first_stage_model.decoder.conv_in.weight": torch.zeros(2),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2),
    "model_ema.decay": torch.tensor(0.9999),
}


def write_ldm_checkpoint(model: UNet, path):
    """A single-file checkpoint holding ``model`` under ``model.diffusion_model.*`` (plus other components)."""
    state_dict = unet_state_dict_to_ldm(model.state_dict(), model.spec)
    return sfumato.save_weights({**state_dict, **OTHER_COMPONENTS}, path)


def test_ldm_key_map_agrees_with_diffusers_converter():
    """The inverse map, fed through diffusers' own LDM converter, gives back our names: the map is
    checked against an independent implementation, on the full-size SD 1.5 layout (meta tensors)."""
    single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")
    spec = unet_config("sd15")
    with torch.device("meta"):
        model = UNet.from_spec(spec)
    ours = model.state_dict()
    ldm = unet_state_dict_to_ldm(ours, spec)
    assert "model.diffusion_model.input_blocks.1.0.in_layers.0.weight" in ldm
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ldm  # the first upsampler, no attention there
    converted = single_file_utils.convert_ldm_unet_checkpoint(ldm, diffusers_config_from_spec(spec))
    assert sorted(converted) == sorted(ours)
    assert all(converted[k] is ldm_value for k, ldm_value in zip(ours, ldm.values()))


def test_loads_single_file_checkpoint_exactly(tmp_path, perturb):
    model = perturb(UNet.from_spec(SD_TINY))
    path = write_ldm_checkpoint(model, tmp_path / "sd-tiny.safetensors")
    loaded = UNet.from_ldm_checkpoint(path, spec=SD_TINY)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # a pipeline spec can point at the single file directly
    from_spec = UNet.from_spec(SD_TINY.model_copy(update={"weights": str(path)}))
    assert torch.equal(from_spec.conv_out.weight, model.conv_out.weight)


def test_matches_diffusers_single_file_conversion(tmp_path, perturb):
    """Outputs agree with diffusers' UNet2DConditionModel after diffusers converts the same checkpoint."""
    diffusers = pytest.importorskip("diffusers")
    single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")
    model = perturb(UNet.from_spec(SD_TINY))
    ldm = unet_state_dict_to_ldm(model.state_dict(), SD_TINY)
    config = diffusers_config_from_spec(SD_TINY)
    reference = diffusers.UNet2DConditionModel.from_config(config).eval()
    reference.load_state_dict(single_file_utils.convert_ldm_unet_checkpoint(ldm, config), strict=True)
    loaded = UNet.from_spec(SD_TINY)
    sfumato.load_into(loaded, unet_state_dict_from_ldm(ldm, SD_TINY))
    x, t, tokens = torch.randn(2, 4, 16, 16), torch.tensor([1.0, 999.0]), torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=tokens).sample
        got = loaded.eval()(x, t, sfumato.Conditioning(tokens=tokens))
    assert (got - expected).abs().max() < 1e-4


def test_unknown_ldm_keys_are_listed(tmp_path):
    model = UNet.from_spec(SD_TINY)
    ldm = unet_state_dict_to_ldm(model.state_dict(), SD_TINY)
    ldm["model.diffusion_model.input_blocks.99.0.in_layers.0.weight"] = torch.zeros(1)
    with pytest.raises(sfumato.WeightsError, match=r"input_blocks\.99\.0\.in_layers\.0\.weight"):
        unet_state_dict_from_ldm(ldm, SD_TINY)


def test_wrong_architecture_lists_mis_shaped_keys(tmp_path):
    path = write_ldm_checkpoint(UNet.from_spec(SD_TINY), tmp_path / "sd-tiny.safetensors")
    wider = SD_TINY.model_copy(update={"cross_attention_dim": 48})
    with pytest.raises(sfumato.WeightsError, match=r"mis-shaped.*\n.*attn2\.to_k\.weight"):
        UNet.from_ldm_checkpoint(path, spec=wider)


def test_pickle_checkpoint_needs_explicit_permission(tmp_path):
    model = UNet.from_spec(SD_TINY)
    path = tmp_path / "sd-tiny.ckpt"
    torch.save({"state_dict": unet_state_dict_to_ldm(model.state_dict(), SD_TINY)}, path)
    with pytest.raises(sfumato.WeightsError, match="pickle"):
        UNet.from_ldm_checkpoint(path, spec=SD_TINY)
    loaded = UNet.from_ldm_checkpoint(path, spec=SD_TINY, allow_pickle=True)
    assert torch.equal(loaded.conv_in.weight, model.conv_in.weight)


def test_diffusers_sd15_config_round_trips_through_spec():
    spec = unet_config("sd15")
    assert spec_from_diffusers_config(diffusers_config_from_spec(spec)) == spec


@pytest.mark.slow
def test_full_size_sd15_single_file_loads_with_no_missing_or_unexpected_key(tmp_path):
    spec = unet_config("sd15")
    model = UNet.from_spec(spec).half()
    path = write_ldm_checkpoint(model, tmp_path / "sd15.safetensors")
    expected = {k: v.clone() for k, v in list(model.state_dict().items())[::50]}
    del model
    loaded = UNet.from_ldm_checkpoint(path)  # the shipped sd15 config; strict loading raises on any key problem
    state = loaded.state_dict()
    assert all(torch.equal(state[k].half(), v) for k, v in expected.items())
