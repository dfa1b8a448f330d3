"""A folder of tiny test-double models (``sfumato_test_doubles``) saved as real weights, with
their registry file and specs, for the batch and server tests: each loads in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import sfumato
import sfumato_test_doubles as doubles

SIZE = {"height": 8, "width": 8}
TEXT_SPEC = doubles.spec_dict(
    task={"type": "text-to-image", **SIZE}, runtime={},
    text_encoder={"type": "test.chars", "weights": "chars.safetensors"},
    denoiser={"type": "test.linear", "weights": "linear.safetensors"},
)
CLASS_SPEC = doubles.spec_dict(
    task={"type": "class-to-image", **SIZE}, runtime={}, text_encoder=None,
    denoiser={"type": "test.linear", "num_classes": 3, "weights": "class.safetensors"},
)


def write_model_folder(root: Path) -> Path:
    """``root`` with ``registry.toml`` (the doubles as local plugin ``test``), their weights and
    the specs ``text.json`` (text-to-image, 8x8, DDIM 5 steps, CFG 2) and ``class.json``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "registry.toml").write_text(f'[plugins]\ntest = "{doubles.__file__}"\n')
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sfumato.save_weights(doubles.CharEncoder.from_spec({}).state_dict(), root / "chars.safetensors")
        for name, spec in (("linear", {}), ("class", {"num_classes": 3})):
            denoiser = doubles.LinearDenoiser.from_spec(spec)
            with torch.no_grad():
                denoiser.proj.weight.copy_(torch.randn(denoiser.proj.weight.shape, generator=generator) * 0.1)
            sfumato.save_weights(denoiser.state_dict(), root / f"{name}.safetensors")
    for name, spec in (("text.json", TEXT_SPEC), ("class.json", CLASS_SPEC)):
        (root / name).write_text(json.dumps({table: value for table, value in spec.items() if value is not None}))
    return root
