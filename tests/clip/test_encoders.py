"""The clip-text and clip-image encoders: conformance, layer choice, preprocessing, weights."""

from __future__ import annotations

import pytest
import sfumato
import torch
from sfumato.testing import EncoderConformance
from sfumato_clip import CLIP, CLIPImageEncoder, CLIPTextEncoder, load_clip, save_clip, train_tokenizer
from sfumato_clip.images import normalize_for_clip


class TestTextEncoderConformance(EncoderConformance):
    spec = {"type": "clip-text"}
    component_class = CLIPTextEncoder


class TestImageEncoderConformance(EncoderConformance):
    spec = {"type": "clip-image"}
    component_class = CLIPImageEncoder


def test_text_encoder_output_contract(tiny_clip_file):
    encoder = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file})
    out = encoder.encode(["a cat", "a photo of a dog"])
    assert out.tokens.shape == (2, 77, 32) and out.pooled.shape == (2, 32)
    assert out.mask.sum(1).tolist() == [4, 7]
    assert encoder.embed_dim == 32


def test_penultimate_layer_changes_tokens_not_pooled(tiny_clip_file):
    last = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file})
    skip = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file, "layer": "penultimate"})
    with torch.no_grad():
        a, b = last.encode(["a cat"]), skip.encode(["a cat"])
        x = last.text.token_embedding(last.tokenizer(["a cat"]).input_ids) + last.text.position_embedding
        x = last.text.blocks[0](x, causal=True)  # the tiny model has 2 blocks: block 0 is penultimate
        expected = last.text.final_norm(x)
    assert torch.equal(a.pooled, b.pooled)
    assert not torch.allclose(a.tokens, b.tokens)
    assert torch.allclose(b.tokens, expected, atol=1e-6)


def test_both_encoders_read_one_clip_file_and_match_the_full_model(tiny_clip_file):
    model = load_clip(tiny_clip_file).eval()
    text = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file})
    image = sfumato.build("encoder", {"type": "clip-image", "weights": tiny_clip_file})
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(text.encode(["a cat"]).pooled, model.encode_text(text.tokenizer(["a cat"]).input_ids))
        assert torch.equal(image.encode(images).pooled, model.encode_image(normalize_for_clip(images, 32)))


def test_image_encoder_resizes_and_normalises():
    images = torch.zeros(1, 3, 48, 64)  # mid-grey, not square
    pixels = normalize_for_clip(images, 32)
    assert pixels.shape == (1, 3, 32, 32)
    expected = (0.5 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(pixels[0, :, 16, 16], expected, atol=1e-5)
    encoder = sfumato.build("encoder", {"type": "clip-image"})
    assert encoder.encode(torch.rand(2, 3, 50, 40) * 2 - 1).pooled.shape == (2, 64)


def test_image_encoder_is_differentiable_w_r_t_pixels():
    encoder = sfumato.build("encoder", {"type": "clip-image"})
    images = (torch.rand(1, 3, 40, 40) * 2 - 1).requires_grad_()
    encoder.encode(images).pooled.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_trained_tokenizer_beside_the_weights_is_found(tmp_path, tiny_config):
    tokenizer = train_tokenizer(["a red circle", "a blue square"] * 3, 280, tmp_path / "tokenizer.json")
    tiny_config.text.vocab_size, tiny_config.text.eos_token_id = tokenizer.vocab_size, tokenizer.end_id
    save_clip(CLIP(tiny_config), tmp_path / "clip.safetensors")
    encoder = sfumato.build("encoder", {"type": "clip-text", "weights": str(tmp_path / "clip.safetensors")})
    assert encoder.tokenizer.vocab_size == tokenizer.vocab_size
    assert encoder.encode(["a red square"]).mask.sum().item() == 5


def test_bundled_tokenizer_that_does_not_fit_is_an_error(tmp_path, tiny_config):
    tiny_config.text.vocab_size, tiny_config.text.eos_token_id = 300, 1
    save_clip(CLIP(tiny_config), tmp_path / "clip.safetensors")
    with pytest.raises(sfumato.SfumatoError, match="does not fit the text tower"):
        sfumato.build("encoder", {"type": "clip-text", "weights": str(tmp_path / "clip.safetensors"),
                                  "tokenizer": "builtin:clip"})


def test_spec_architecture_that_contradicts_the_file_is_an_error(tiny_clip_file):
    with pytest.raises(sfumato.SfumatoError, match="different architecture"):
        sfumato.build("encoder", {"type": "clip-image", "weights": tiny_clip_file, "architecture": "tiny"})


def test_presets_build_the_published_sizes():
    from sfumato_clip import resolve_config
    from sfumato_clip.model import TextTransformer

    config = resolve_config("ViT-L/14")
    with torch.device("meta"):
        text = TextTransformer(config.text, None)
    assert sum(p.numel() for p in text.parameters()) == 123_060_480  # SD 1.x's text encoder
    assert resolve_config("ViT-B/16").vision.num_patches == 196
