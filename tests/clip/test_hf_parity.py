"""sfumato's CLIP loads transformers CLIP checkpoints and reproduces transformers' outputs."""

from __future__ import annotations

import json

import pytest
import sfumato
import torch
from safetensors.torch import save_file
from sfumato_clip import CLIP, export_hf, load_clip, read_checkpoint
from sfumato_clip.conversion import hf_to_sfumato, sfumato_to_hf
from sfumato_clip.model import TextTransformer

transformers = pytest.importorskip("transformers")
TOL = 1e-4


@pytest.fixture
def hf_clip(small_hf_config, tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPModel(small_hf_config()).eval()
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def _max_err(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("hidden_act,eos", [("quick_gelu", 999), ("gelu", 2)])
def test_clip_model_folder_matches_transformers(small_hf_config, random_ids, tmp_path, hidden_act, eos):
    torch.manual_seed(0)
    hf = transformers.CLIPModel(small_hf_config(hidden_act, eos)).eval()
    hf.save_pretrained(tmp_path)
    ours = load_clip(tmp_path).eval()
    ids, pixels = random_ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=pixels)
        text, image = ours.encode_text(ids), ours.encode_image(pixels)
        logits = ours.logits(image, text)
    assert _max_err(torch.nn.functional.normalize(text, dim=-1), ref.text_embeds) < TOL
    assert _max_err(torch.nn.functional.normalize(image, dim=-1), ref.image_embeds) < TOL
    assert _max_err(logits, ref.logits_per_image) < TOL
    assert logits.shape == (2, 3)


def test_export_round_trips_through_transformers(hf_clip, random_ids, tmp_path):
    hf, folder = hf_clip
    ours = load_clip(folder).eval()
    export_hf(ours, tmp_path / "exported")
    again = transformers.CLIPModel.from_pretrained(tmp_path / "exported").eval()
    ids, pixels = random_ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = hf(input_ids=ids, pixel_values=pixels), again(input_ids=ids, pixel_values=pixels)
    assert _max_err(a.logits_per_image, b.logits_per_image) == 0.0


def test_text_model_with_and_without_prefix(small_hf_config, random_ids, tmp_path):
    torch.manual_seed(0)
    text_config = small_hf_config().text_config
    hf = transformers.CLIPTextModel(text_config).eval()
    hf.save_pretrained(tmp_path / "prefixed")
    bare = tmp_path / "bare"
    bare.mkdir()
    state = {k.removeprefix("text_model."): v for k, v in hf.state_dict().items()}
    assert not any(k.startswith("text_model.") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, bare / "model.safetensors")
    (bare / "config.json").write_text(json.dumps(text_config.to_dict()))

    ids = random_ids()
    with torch.no_grad():
        ref = hf(input_ids=ids)
    for folder in (tmp_path / "prefixed", bare / "model.safetensors"):
        weights, config = read_checkpoint(folder)
        assert config.embed_dim == 0 and config.text.width == 32
        tower = TextTransformer(config.text, config.embed_dim).eval()
        sfumato.load_into(tower, {k.removeprefix("text."): v for k, v in weights.items()})
        with torch.no_grad():
            out = tower(ids)
        assert _max_err(out.tokens, ref.last_hidden_state) < TOL
        assert _max_err(out.pooled, ref.pooler_output) < TOL


def test_vision_model_folder_feeds_the_image_encoder(small_hf_config, tmp_path):
    torch.manual_seed(0)
    hf = transformers.CLIPVisionModelWithProjection(small_hf_config().vision_config).eval()
    hf.save_pretrained(tmp_path)
    encoder = sfumato.build("encoder", {"type": "clip-image", "weights": str(tmp_path)}).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    pixels = encoder_pixels(images)
    with torch.no_grad():
        ref = hf(pixel_values=pixels)
        out = encoder.encode(images)
    assert out.pooled.shape == (2, 16)
    assert _max_err(out.pooled, ref.image_embeds) < TOL
    assert _max_err(out.tokens, ref.last_hidden_state) < TOL


def encoder_pixels(images: torch.Tensor) -> torch.Tensor:
    """What CLIPImageProcessor would produce for already-sized images in [-1, 1]."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def test_sd1_single_file_text_encoder_keys(small_hf_config, random_ids, tmp_path):
    torch.manual_seed(0)
    hf = transformers.CLIPTextModel(small_hf_config().text_config).eval()
    sd = {f"cond_stage_model.transformer.{k}": v for k, v in hf.state_dict().items()}
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # other SD parts are ignored
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)
    ours = hf_to_sfumato(sd)
    assert all(k.startswith("text.") for k in ours)
    config = read_checkpoint_config_of_sd(sd, tmp_path)
    assert (config.text.width, config.text.layers, config.embed_dim) == (768, 12, 0)

    tower = TextTransformer(hf_text_config_to_ours(hf), None).eval()
    sfumato.load_into(tower, {k.removeprefix("text."): v for k, v in ours.items()})
    ids = random_ids()
    with torch.no_grad():
        assert _max_err(tower(ids).tokens, hf(input_ids=ids).last_hidden_state) < TOL


def read_checkpoint_config_of_sd(sd, tmp_path):
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "sd.safetensors")
    return read_checkpoint(tmp_path / "sd.safetensors")[1]


def hf_text_config_to_ours(hf):
    from sfumato_clip.conversion import config_from_hf

    return config_from_hf(hf.config.to_dict(), embed_dim=None).text


def test_key_maps_are_inverse(tiny_config):
    state = CLIP(tiny_config).state_dict()
    hf_keys = sfumato_to_hf(state)
    assert "text_model.encoder.layers.1.self_attn.k_proj.weight" in hf_keys
    back = hf_to_sfumato(hf_keys)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_unknown_keys_are_listed():
    with pytest.raises(sfumato.WeightsError, match="text_model.encoder.layers.0.adapter.weight"):
        hf_to_sfumato({"text_model.encoder.layers.0.adapter.weight": torch.zeros(1)})


@pytest.mark.slow
def test_full_size_vit_b32_matches_transformers(random_ids, tmp_path):
    """OpenAI ViT-B/32's architecture (random weights), loaded from a transformers folder."""
    from sfumato_clip.conversion import config_to_hf
    from sfumato_clip import resolve_config

    hf_config = config_to_hf(resolve_config("ViT-B/32"))
    torch.manual_seed(0)
    hf = transformers.CLIPModel(transformers.CLIPConfig(**hf_config)).eval()
    hf.save_pretrained(tmp_path)
    ours = load_clip(tmp_path).eval()
    assert ours.config.text == resolve_config("ViT-B/32").text
    ids, pixels = random_ids(vocab=49408), torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=pixels)
        logits = ours(pixels, ids)
    assert _max_err(logits, ref.logits_per_image) < 1e-3
