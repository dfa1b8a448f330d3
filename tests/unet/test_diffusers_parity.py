"""The U-Net computes what diffusers' UNet2DModel / UNet2DConditionModel compute, on the same weights,
and reads and writes diffusers component folders."""

import pytest
import torch

import sfumato
from sfumato_unet import UNet, spec_from_diffusers_config, unet_config

diffusers = pytest.importorskip("diffusers")

PIXEL = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=8, norm_num_groups=8,
)
PIXEL_CLASSES = dict(
    PIXEL, block_out_channels=(16, 32, 32), layers_per_block=2, attention_head_dim=None, num_class_embeds=10,
    down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"), freq_shift=1, flip_sin_to_cos=False,
)
CROSS = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, attention_head_dim=4, norm_num_groups=8,
)
# Stable Diffusion 1.x topology at tiny widths: 3 cross-attention levels + 1 plain, 2 layers per block.
SD_TINY = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
)
# SD 2.x-style options: linear projections, two transformer layers, per-level heads, class labels.
CROSS_VARIANT = dict(
    CROSS, use_linear_projection=True, transformer_layers_per_block=2, attention_head_dim=(2, 4), num_class_embeds=5,
)


def diffusers_model(config: dict, perturb):
    cls = diffusers.UNet2DConditionModel if "cross_attention_dim" in config else diffusers.UNet2DModel
    torch.manual_seed(0)
    return perturb(cls(**config))


def inputs(config: dict, size: int, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config["in_channels"], size, size, generator=g)
    t = torch.tensor([3.0, 917.5])[:batch]
    tokens = torch.randn(batch, 7, config["cross_attention_dim"], generator=g) if "cross_attention_dim" in config else None
    labels = torch.tensor([1, 4])[:batch] if config.get("num_class_embeds") else None
    return x, t, tokens, labels


def reference(model, x, t, tokens, labels):
    if tokens is None:
        return model(x, t, class_labels=labels).sample
    return model(x, t, encoder_hidden_states=tokens, class_labels=labels).sample


@pytest.mark.parametrize(
    "config, size",
    [(PIXEL, 16), (PIXEL_CLASSES, 16), (CROSS, 8), (SD_TINY, 16), (SD_TINY, 20), (CROSS_VARIANT, 8)],
    ids=["pixel", "pixel-classes", "cross", "sd-topology", "sd-topology-odd-size", "cross-linear-classes"],
)
def test_matches_diffusers_after_loading_its_folder(config, size, tmp_path, perturb):
    reference_model = diffusers_model(config, perturb)
    reference_model.save_pretrained(tmp_path)
    model = UNet.from_diffusers(tmp_path).eval()
    x, t, tokens, labels = inputs(config, size)
    with torch.no_grad():
        expected = reference(reference_model, x, t, tokens, labels)
        got = model(x, t, sfumato.Conditioning(tokens=tokens, labels=labels))
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("config", [PIXEL, SD_TINY], ids=["pixel", "sd-topology"])
def test_diffusers_loads_exported_folder_and_round_trip_is_exact(config, tmp_path, perturb):
    model = perturb(UNet.from_spec(spec_from_diffusers_config(config)), seed=3)
    model.to_diffusers(tmp_path / "exported")
    reloaded = UNet.from_diffusers(tmp_path / "exported")
    assert reloaded.spec == model.spec
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    assert list(model.state_dict()) == list(reloaded.state_dict())

    reference_model = type(diffusers_model(config, perturb)).from_pretrained(tmp_path / "exported").eval()
    x, t, tokens, labels = inputs(config, 16)
    with torch.no_grad():
        expected = reference(reference_model, x, t, tokens, labels)
        got = model(x, t, sfumato.Conditioning(tokens=tokens, labels=labels))
    assert (got - expected).abs().max() < 1e-4


def test_sd15_config_is_the_converted_diffusers_config():
    sd15_diffusers = {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }
    assert spec_from_diffusers_config(sd15_diffusers) == unet_config("sd15")


def test_sd15_has_the_parameter_count_of_stable_diffusion():
    with torch.device("meta"):
        model = UNet.from_spec(unet_config("sd15"))
    assert sum(p.numel() for p in model.parameters()) == 859_520_964


def test_unsupported_diffusers_option_is_named():
    with pytest.raises(sfumato.SpecError, match="resnet_time_scale_shift"):
        spec_from_diffusers_config({**PIXEL, "_class_name": "UNet2DModel", "resnet_time_scale_shift": "scale_shift"})


def test_legacy_attention_names_load(tmp_path, perturb):
    """Folders saved by old diffusers (google/ddpm-*) name attention weights query/key/value/proj_attn."""
    model = perturb(UNet.from_spec(spec_from_diffusers_config({**PIXEL, "_class_name": "UNet2DModel"})))
    model.to_diffusers(tmp_path)
    legacy = {
        k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
        .replace(".to_out.0.", ".proj_attn."): v
        for k, v in model.state_dict().items()
    }
    assert any(".proj_attn." in k for k in legacy)
    sfumato.save_weights(legacy, tmp_path / "diffusion_pytorch_model.safetensors")
    reloaded = UNet.from_diffusers(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
