"""``[runtime]`` options change how a pipeline runs, not what it computes (within precision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato


def _images(pipe) -> np.ndarray:
    result = pipe(labels=[3, 7], seed=0, steps=4, progress=False)
    return np.stack([np.asarray(image, dtype=np.float32) for image in result.images]) / 255


def test_bfloat16_autocast_runs_the_denoiser_in_bfloat16_with_float32_weights():
    fp32 = sfumato.load_pipeline("digits")
    auto = sfumato.load_pipeline("digits", overrides={"runtime.autocast": "bfloat16"})
    assert next(auto.denoiser.parameters()).dtype == torch.float32
    seen = []
    conv = next(m for m in auto.denoiser.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    reference, autocast = _images(fp32), _images(auto)
    handle.remove()
    assert seen and set(seen) == {torch.bfloat16}
    difference = np.abs(reference - autocast)
    assert 0 < difference.max()  # bfloat16 arithmetic did happen
    assert difference.mean() < 0.02  # and it draws the same digits


def test_autocast_needs_float32_weights():
    with pytest.raises(sfumato.SpecError, match=r"autocast = 'bfloat16' with dtype = 'float16'.*dtype = \"float32\""):
        sfumato.load_pipeline("digits", overrides={"runtime.autocast": "bfloat16", "runtime.dtype": "float16"})
