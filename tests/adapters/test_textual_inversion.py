"""Textual inversion on the tiny SD pipeline equals diffusers' ``load_textual_inversion``: the
prompt embeddings the U-Net sees, for one- and multi-vector embeddings in the diffusers and WebUI
layouts, and one image; unbinding restores the tokenizer and the embedding table exactly; pickle
files are read only when allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sfumato

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE  # noqa: E402

WIDTH = 32  # the tiny text encoder's
#: Triggers written as bound: diffusers writes an upper-case multi-vector trigger as its first vector
#: only (its prompt rewriting matches case, its tokenizer does not); sfumato ignores case for all.
PROMPTS = ["a photo of <cat> above a blue square", "<cat>, <cat>and a red circle", "no trigger here"]


def vectors(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference(tiny_sd):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    return sfumato.load_pipeline(tiny_sd, {"scheduler.type": "ddim"})  # as the DDIM reference


def reference_embeddings(reference, path, token: str, prompts: list[str]) -> torch.Tensor:
    reference.load_textual_inversion(str(path), token=token)
    try:
        embeds, _ = reference.encode_prompt(prompts, "cpu", 1, False)  # converts multi-vector prompts itself
        return embeds
    finally:
        reference.unload_textual_inversion()


LAYOUTS = {
    "diffusers, one vector": lambda v: {"<cat>": v[0]},
    "diffusers, three vectors": lambda v: {"<cat>": v},
    "WebUI emb_params": lambda v: {"emb_params": v},
    "WebUI string_to_param.*": lambda v: {"string_to_param.*": v},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_embeddings_equal_diffusers_load_textual_inversion(reference, pipe, layout, tmp_path):
    path = tmp_path / "cat.safetensors"
    save_file(LAYOUTS[layout](vectors(3, seed=1)), str(path))
    theirs = reference_embeddings(reference, path, "<cat>", PROMPTS)
    pipe.load_adapter(path, type="textual-inversion", token=None if layout.startswith("diffusers") else "<cat>")
    try:
        ours = pipe.text_encoder.encode(PROMPTS).tokens
    finally:
        pipe.remove_adapter(0)
    assert torch.allclose(ours, theirs, atol=1e-5)
    baseline = pipe.text_encoder.encode(PROMPTS).tokens
    assert (ours[0] - baseline[0]).abs().max() > 0.1  # the trigger changed the prompt's embedding
    assert torch.equal(ours[2], baseline[2])  # a prompt without it did not change


def test_an_image_with_a_multi_vector_embedding_equals_diffusers(reference, pipe, tmp_path):
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<cat>": vectors(2, seed=2) * 3}, str(path))
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))
    reference.load_textual_inversion(str(path))
    try:
        theirs = reference(PROMPTS[0], negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=3,
                           guidance_scale=7.5, latents=latents, output_type="np").images
    finally:
        reference.unload_textual_inversion()
    pipe.load_adapter(path, type="textual-inversion")
    try:
        result = pipe(PROMPTS[0], negative_prompt="", latents=latents, steps=3, progress=False)
    finally:
        pipe.remove_adapter(0)
    floats = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(floats - theirs).max() < 1e-4
    assert np.abs(np.asarray(result.images[0], dtype=np.int16) - (theirs[0] * 255).round()).max() <= 2


def test_unbinding_restores_the_tokenizer_and_the_table_and_triggers_stack(pipe, tmp_path):
    encoder = pipe.text_encoder
    table, tokenizer = encoder.text.token_embedding.weight, encoder.tokenizer
    before = encoder.encode(PROMPTS).tokens
    save_file({"<cat>": vectors(2, seed=3)}, str(tmp_path / "cat.safetensors"))
    save_file({"emb_params": vectors(1, seed=4)}, str(tmp_path / "dog-style.safetensors"))
    pipe.load_adapter(tmp_path / "cat.safetensors", type="textual-inversion")
    pipe.load_adapter(tmp_path / "dog-style.safetensors", type="textual-inversion")  # trigger: the file's name
    assert encoder.text.token_embedding.weight.shape[0] == table.shape[0] + 3
    both = encoder.tokenizer(["<CAT> Dog-Style"]).input_ids[0, :4].tolist()  # case ignored, every vector
    assert both == [tokenizer.start_id, table.shape[0], table.shape[0] + 1, table.shape[0] + 2]
    assert encoder.tokenizer(["dog-styles"]).input_ids[0, 1].item() < table.shape[0]  # not inside a word
    pipe.remove_adapter("cat")  # the other keeps working, renumbered
    assert encoder.tokenizer(["dog-style"]).input_ids[0, 1].item() == table.shape[0]
    pipe.remove_adapter(0)
    assert encoder.text.token_embedding.weight is table and encoder.tokenizer is tokenizer
    assert torch.equal(encoder.encode(PROMPTS).tokens, before)


def test_a_pickle_embedding_loads_only_when_allowed(pipe, tmp_path):
    path = tmp_path / "cat.pt"
    torch.save({"string_to_param": {"*": vectors(2, seed=5)}, "name": "kitty", "step": 500}, path)
    with pytest.raises(sfumato.WeightsError, match="pickle.*allow_pickle"):
        pipe.load_adapter(path, type="textual-inversion")
    adapter = pipe.load_adapter(path, type="textual-inversion", allow_pickle=True)
    try:
        assert adapter.token == "kitty"  # the WebUI file's own name
        assert pipe.text_encoder.tokenizer(["kitty"]).input_ids[0, 1:3].tolist() == [49408, 49409]
    finally:
        pipe.remove_adapter(0)
