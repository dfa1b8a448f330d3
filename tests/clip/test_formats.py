"""Checkpoint and tokenizer formats: open_clip state dicts (parity with transformers, which holds
the same weights under other names), Stable Diffusion-style tokenizer folders, exported folders
with a trained tokenizer."""

from __future__ import annotations

import pytest
import sfumato
import torch
from safetensors.torch import save_file
from sfumato_clip import CLIP, export_hf, load_clip, train_tokenizer
from sfumato_clip.config import PRESETS


def open_clip_state(hf_model) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel's weights in open_clip's layout (``open_clip/model.py``: OpenAI's
    names, q/k/v stacked in ``in_proj_weight``, projections as ``x @ proj`` matrices), written
    from open_clip's key names independently of sfumato's converter."""
    hf = hf_model.state_dict()
    out = {"token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": hf["text_model.final_layer_norm.weight"], "ln_final.bias": hf["text_model.final_layer_norm.bias"],
           "text_projection": hf["text_projection.weight"].T.contiguous(), "logit_scale": hf["logit_scale"],
           "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
           "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
           "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
           "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"], "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
           "visual.proj": hf["visual_projection.weight"].T.contiguous()}
    for tower, prefix in (("text_model", ""), ("vision_model", "visual.")):
        layers = sum(1 for k in hf if k.startswith(f"{tower}.encoder.layers.") and k.endswith("layer_norm1.weight"))
        for i in range(layers):
            theirs, ours = f"{tower}.encoder.layers.{i}", f"{prefix}transformer.resblocks.{i}"
            for param in ("weight", "bias"):
                out[f"{ours}.attn.in_proj_{param}"] = torch.cat(
                    [hf[f"{theirs}.self_attn.{p}_proj.{param}"] for p in "qkv"])
                for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    out[f"{ours}.{a}.{param}"] = hf[f"{theirs}.{b}.{param}"]
    return {k: v.contiguous() for k, v in out.items()}


def test_an_open_clip_checkpoint_loads_and_matches_transformers(tmp_path, random_ids):
    """Width 128 so heads = width // 64 = 2, as in every open_clip ViT."""
    import transformers

    text = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, eos_token_id=999, bos_token_id=998, pad_token_id=999, projection_dim=32)
    vision = dict(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=1, projection_dim=32)
    torch.manual_seed(0)
    hf = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    save_file(open_clip_state(hf), str(tmp_path / "open_clip.safetensors"))
    ours = load_clip(tmp_path / "open_clip.safetensors").eval()
    assert (ours.config.text.heads, ours.config.vision.heads, ours.config.vision.image_size) == (2, 1, 32)
    ids, pixels = random_ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs_text, theirs_image = hf.get_text_features(input_ids=ids), hf.get_image_features(pixel_values=pixels)
        theirs_text = getattr(theirs_text, "pooler_output", theirs_text)
        theirs_image = getattr(theirs_image, "pooler_output", theirs_image)
        assert torch.allclose(ours.encode_text(ids), theirs_text, atol=1e-5)
        assert torch.allclose(ours.encode_image(pixels), theirs_image, atol=1e-5)
    assert ours.logit_scale.item() == pytest.approx(hf.logit_scale.item())


def test_an_open_clip_checkpoint_with_unknown_keys_is_refused(tmp_path):
    state = {"token_embedding.weight": torch.zeros(10, 64), "transformer.resblocks.0.ln_1.weight": torch.zeros(64),
             "visual.trunk.stem.weight": torch.zeros(1)}
    save_file(state, str(tmp_path / "timm.safetensors"))
    with pytest.raises(sfumato.WeightsError, match="visual.trunk.stem.weight"):
        load_clip(tmp_path / "timm.safetensors")


def test_a_weights_folder_with_vocab_and_merges_brings_its_tokenizer(tmp_path):
    """An exported folder of a model with a small trained tokenizer: the folder's vocab.json and
    merges.txt (no tokenizer.json, as Stable Diffusion's tokenizer folders) are used, not the
    bundled 49,408-token BPE, which would not fit the 300-token text tower."""
    captions = ["a red circle", "a blue square", "two green triangles"] * 4
    tokenizer = train_tokenizer(captions, vocab_size=300)
    config = PRESETS["tiny"].model_copy(deep=True)
    config.text.vocab_size, config.text.eos_token_id = tokenizer.vocab_size, tokenizer.end_id
    export_hf(CLIP(config), tmp_path / "hf", tokenizer)
    assert not (tmp_path / "hf" / "tokenizer.json").exists()
    encoder = sfumato.build("encoder", {"type": "clip-text", "weights": str(tmp_path / "hf")})
    assert torch.equal(encoder.tokenizer(["a red circle"]).input_ids, tokenizer(["a red circle"]).input_ids)
    # a diffusers layout: text_encoder/ (the weights) beside tokenizer/ (vocab.json + merges.txt)
    (tmp_path / "sd" / "tokenizer").mkdir(parents=True)
    (tmp_path / "hf").rename(tmp_path / "sd" / "text_encoder")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "sd" / "text_encoder" / name).rename(tmp_path / "sd" / "tokenizer" / name)
    encoder = sfumato.build("encoder", {"type": "clip-text", "weights": str(tmp_path / "sd" / "text_encoder")})
    assert encoder.tokenizer.vocab_size == tokenizer.vocab_size
