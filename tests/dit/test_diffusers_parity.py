"""The DiT computes what diffusers' DiTTransformer2DModel and PixArtTransformer2DModel compute on
the same (random) weights, loads the folders they save, and writes folders they load."""

import json

import pytest
import torch

import sfumato
from sfumato_dit import DiT, spec_from_diffusers_config

diffusers = pytest.importorskip("diffusers")

TINY = dict(sample_size=8, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=8, in_channels=4)
DIT = dict(TINY, out_channels=8, num_embeds_ada_norm=10)  # learned sigma, as DiT-XL/2
PIXART = dict(TINY, out_channels=8, cross_attention_dim=16, caption_channels=12)  # T5-style caption projection
PIXART_DIRECT = dict(TINY, out_channels=4, cross_attention_dim=12)  # tokens read directly, no learned sigma
# PixArt-alpha 1024's options: micro-conditions (hidden width divisible by 3) and interpolation scale 2
PIXART_MICRO = dict(TINY, attention_head_dim=6, out_channels=8, cross_attention_dim=12, caption_channels=10,
                    use_additional_conditions=True, interpolation_scale=2)
#: Largest |sfumato - diffusers| allowed, float32 (measured on CPU: 0, bit-identical, in every case here).
TOLERANCE = 1e-5


def diffusers_model(config: dict, perturb):
    cls = diffusers.DiTTransformer2DModel if "num_embeds_ada_norm" in config else diffusers.PixArtTransformer2DModel
    torch.manual_seed(0)
    return perturb(cls(**config))


def reference(model, x, t, config, labels=None, tokens=None, mask=None):
    """diffusers' prediction: the first half of the channels with a learned sigma, as its pipelines take."""
    if isinstance(model, diffusers.DiTTransformer2DModel):
        out = model(x, t, class_labels=labels).sample
    else:
        height, width = x.shape[-2] * 8, x.shape[-1] * 8
        added = {"resolution": torch.tensor([[height, width]] * len(x), dtype=torch.float32),
                 "aspect_ratio": torch.tensor([[height / width]] * len(x))} if config.get("use_additional_conditions") else None
        out = model(x, encoder_hidden_states=tokens, timestep=t, encoder_attention_mask=mask, added_cond_kwargs=added).sample
    return out[:, : config["in_channels"]] if out.shape[1] == 2 * config["in_channels"] else out


def test_class_conditional_dit_matches_diffusers_after_loading_its_folder(tmp_path, perturb):
    reference_model = diffusers_model(DIT, perturb)
    reference_model.save_pretrained(tmp_path)
    model = DiT.from_diffusers(tmp_path).eval()
    assert (model.spec.num_classes, model.null_label, model.spec.learned_sigma) == (10, 10, True)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3.0, 417.25, 999.0])  # fractional timesteps too
    labels = torch.tensor([1, 9, 10])  # the last one is the null class
    with torch.no_grad():
        expected = reference(reference_model, x, t, DIT, labels=labels)
        got = model(x, t, sfumato.Conditioning(labels=labels))
    assert got.shape == expected.shape == (3, 4, 8, 8)
    assert (got - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("config", [PIXART, PIXART_DIRECT, PIXART_MICRO], ids=["caption-projection", "direct", "micro"])
@pytest.mark.parametrize("size", [(8, 8), (12, 8)], ids=["trained-size", "other-size"])
def test_text_conditional_pixart_matches_diffusers_after_loading_its_folder(config, size, tmp_path, perturb):
    reference_model = diffusers_model(config, perturb)
    reference_model.save_pretrained(tmp_path)
    model = DiT.from_diffusers(tmp_path).eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, *size, generator=g), torch.tensor([3.0, 917.5])
    tokens = torch.randn(2, 5, config.get("caption_channels") or config["cross_attention_dim"], generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        expected = reference(reference_model, x, t, config, tokens=tokens, mask=mask)
        got = model(x, t, sfumato.Conditioning(tokens=tokens, mask=mask.bool()))
    assert got.shape == expected.shape == (2, 4, *size)
    assert (got - expected).abs().max() < TOLERANCE


def test_a_diffusers_folder_loads_through_the_weights_field(tmp_path, perturb):
    """``weights = "path/to/transformer"`` in a spec, with the matching architecture fields."""
    reference_model = diffusers_model(PIXART, perturb)
    reference_model.save_pretrained(tmp_path)
    spec = spec_from_diffusers_config(json.loads((tmp_path / "config.json").read_text()))
    model = sfumato.build("denoiser", {**spec.model_dump(), "weights": str(tmp_path)}).eval()
    x, t, tokens = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 3, 12)
    with torch.no_grad():
        expected = reference(reference_model, x, t, PIXART, tokens=tokens)
        assert (model(x, t, sfumato.Conditioning(tokens=tokens)) - expected).abs().max() < TOLERANCE


def test_a_spec_that_disagrees_with_the_folder_config_names_the_fields(tmp_path, perturb):
    diffusers_model(DIT, perturb).save_pretrained(tmp_path)
    with pytest.raises(sfumato.SfumatoError) as error:
        sfumato.build("denoiser", {"type": "dit", "weights": str(tmp_path), "sample_size": 8, "num_classes": 10})
    message = str(error.value)
    for fix in ("num_layers = 2", "num_attention_heads = 2", "attention_head_dim = 8", "learned_sigma = true"):
        assert fix in message
    assert str(tmp_path) in message


@pytest.mark.parametrize("config", [DIT, PIXART_MICRO], ids=["dit", "pixart-micro"])
def test_diffusers_loads_an_exported_folder_and_the_round_trip_is_exact(config, tmp_path, perturb):
    torch.manual_seed(0)
    model = perturb(DiT.from_spec(spec_from_diffusers_config(config)), seed=3)
    model.to_diffusers(tmp_path / "exported")
    reloaded = DiT.from_diffusers(tmp_path / "exported")
    assert reloaded.spec == model.spec
    assert list(model.state_dict()) == list(reloaded.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))

    reference_model = type(diffusers_model(config, perturb)).from_pretrained(tmp_path / "exported").eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 917.5])
    cond = dict(labels=torch.tensor([0, 9])) if "num_embeds_ada_norm" in config else dict(tokens=torch.randn(2, 4, 10, generator=g))
    with torch.no_grad():
        expected = reference(reference_model, x, t, config, **cond)
        got = model(x, t, sfumato.Conditioning(**cond))
    assert (got - expected).abs().max() < TOLERANCE


def test_legacy_transformer2dmodel_configs_are_read_by_norm_type():
    """facebook/DiT-XL-2-256 and the PixArt-alpha repositories save ``_class_name: Transformer2DModel``."""
    dit = spec_from_diffusers_config({**DIT, "_class_name": "Transformer2DModel", "norm_type": "ada_norm_zero"})
    pixart = spec_from_diffusers_config({**PIXART_MICRO, "_class_name": "Transformer2DModel",
                                         "norm_type": "ada_norm_single", "sample_size": 128,
                                         "use_additional_conditions": None, "interpolation_scale": None})
    assert (dit.norm_type, dit.num_classes) == ("ada_norm_zero", 10)
    assert (pixart.norm_type, pixart.micro_conditions, pixart.interpolation_scale) == ("ada_norm_single", True, 2)


@pytest.mark.parametrize("config, message", [
    ({**DIT, "activation_fn": "geglu"}, "activation_fn='geglu' is not supported"),
    ({**DIT, "_class_name": "Transformer2DModel", "norm_type": "layer_norm"}, "Transformer2DModel"),
    ({**DIT, "_class_name": "UNet2DModel"}, "reads DiTTransformer2DModel and PixArtTransformer2DModel"),
])
def test_unsupported_diffusers_configs_are_named(config, message):
    with pytest.raises(sfumato.SpecError, match=message):
        spec_from_diffusers_config(config)


def test_folders_without_config_or_with_pickle_weights_are_refused(tmp_path):
    with pytest.raises(sfumato.WeightsError, match="no config.json"):
        DiT.from_diffusers(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**DIT, "_class_name": "DiTTransformer2DModel"}))
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(sfumato.WeightsError, match="refusing to load a pickle"):
        DiT.from_diffusers(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(sfumato.SpecError, match="config.json: malformed JSON"):
        DiT.from_diffusers(tmp_path)


def test_learned_positions_cannot_be_exported_to_diffusers(tmp_path):
    model = DiT.from_spec({**spec_from_diffusers_config(DIT).model_dump(), "positions": "learned"})
    with pytest.raises(sfumato.SpecError, match="positions = 'learned'"):
        model.to_diffusers(tmp_path)
    assert not (tmp_path / "config.json").exists()
