"""Shared fixtures for the CLIP plugin tests: small random configs and a saved tiny CLIP."""

from __future__ import annotations

import pytest
import torch
from sfumato_clip import CLIP, CLIPConfig, TextConfig, VisionConfig, save_clip


def _small_hf_config(hidden_act: str = "quick_gelu", eos_token_id: int = 999):
    """A random-weights-sized transformers CLIPConfig: 2-layer towers, width 32, vocab 1000."""
    from transformers import CLIPConfig as HFConfig

    text = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act,
                eos_token_id=eos_token_id, bos_token_id=998, pad_token_id=999, projection_dim=16)
    vision = dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, hidden_act=hidden_act,
                  projection_dim=16)
    return HFConfig(text_config=text, vision_config=vision, projection_dim=16)


def _random_ids(batch: int = 3, length: int = 77, vocab: int = 1000, seed: int = 0) -> torch.Tensor:
    """Caption-like ids: start token, random words, end token at varying positions, end padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 2, (batch, length), generator=g)
    ids[:, 0] = vocab - 2
    for i in range(batch):
        end = 3 + 7 * i
        ids[i, end:] = vocab - 1
    return ids


@pytest.fixture
def small_hf_config():
    return _small_hf_config


@pytest.fixture
def random_ids():
    return _random_ids


TINY = CLIPConfig(
    embed_dim=32,
    text=TextConfig(width=32, layers=2, heads=4, mlp_width=64),
    vision=VisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=4, mlp_width=64),
)


@pytest.fixture
def tiny_config() -> CLIPConfig:
    return TINY.model_copy(deep=True)


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory) -> str:
    """A random tiny CLIP (bundled tokenizer) saved as a sfumato safetensors file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    save_clip(CLIP(TINY), path)
    return str(path)
