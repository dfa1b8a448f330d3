"""A LoRA on the tiny SD pipeline's U-Net (every linear and convolution layer, LoCon-style on the
3x3 convolutions) and text encoder, loaded by sfumato from each layout trainers write, makes the
image diffusers makes with the same LoRA merged into its weights (``W + scale * alpha / rank *
up @ down`` on diffusers' modules); fused and unfused modes agree; removing it restores every
weight bit for bit; several stack with their own scales.

Images are compared as floats in [0, 1] (diffusers' ``output_type="np"``) and as the 8-bit images
written to PNG: at most 2/255 apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

from adapters.lora_files import merge, random_lora, write_diffusers_old, write_kohya, write_peft  # noqa: E402
from sd.tiny_sd import SIZE  # noqa: E402

PROMPT = "a red circle above a blue square"
STEPS = 4
SCALE = 0.7
#: Largest difference allowed on 8-bit images (the issue's bound), and on the floats before rounding.
UINT8_TOLERANCE = 2
FLOAT_TOLERANCE = 1e-4
WRITERS = {"peft": write_peft, "kohya": write_kohya, "diffusers-old": write_diffusers_old,
           "peft-transformers5": lambda lora, path: write_peft(lora, path, text_prefix="")}


def initial_latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference(tiny_sd):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def models(reference):
    return {"unet": reference.unet, "text_encoder": reference.text_encoder}


@pytest.fixture(scope="module")
def lora_a(models):
    return random_lora(models, rank=4, alpha=2.0, seed=11)


@pytest.fixture(scope="module")
def lora_b(models):
    return random_lora(models, rank=2, alpha=3.0, seed=12, every=3)


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    return sfumato.load_pipeline(tiny_sd, {"scheduler.type": "ddim"})  # as the DDIM reference


def reference_images(reference, models, *loras) -> np.ndarray:
    """diffusers' images with each ``(lora, scale)`` merged, its weights restored afterwards."""
    saved = {name: {k: v.clone() for k, v in model.state_dict().items()} for name, model in models.items()}
    try:
        for lora, scale in loras:
            merge(models, lora, scale)
        return reference(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                         guidance_scale=7.5, latents=initial_latents(), output_type="np").images
    finally:
        for name, model in models.items():
            model.load_state_dict(saved[name])


def sfumato_images(pipe) -> tuple[np.ndarray, np.ndarray]:
    result = pipe(PROMPT, negative_prompt="", latents=initial_latents(), steps=STEPS, progress=False)
    floats = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    return floats, np.asarray(result.images[0], dtype=np.int16)


def assert_same(ours: tuple[np.ndarray, np.ndarray], theirs: np.ndarray) -> None:
    floats, uint8 = ours
    assert np.abs(floats - theirs).max() < FLOAT_TOLERANCE
    assert np.abs(uint8 - (theirs[0] * 255).round().astype(np.int16)).max() <= UINT8_TOLERANCE


@pytest.fixture(scope="module")
def with_a(reference, models, lora_a):
    theirs = reference_images(reference, models, (lora_a, SCALE))
    without = reference_images(reference, models)
    assert np.abs(theirs - without).mean() > 0.02  # the LoRA changes the image: a misplaced layer would show
    return theirs


@pytest.mark.parametrize("layout", list(WRITERS))
def test_a_lora_in_each_layout_equals_diffusers_with_it_merged(pipe, lora_a, with_a, layout, tmp_path):
    path = WRITERS[layout](lora_a, tmp_path / f"{layout}.safetensors")
    adapter = pipe.load_adapter(path, scale=SCALE)
    try:
        assert len(adapter.patches) == len(lora_a)  # every layer of the file found its place
        assert_same(sfumato_images(pipe), with_a)
    finally:
        pipe.remove_adapter(adapter)


def test_unfused_equals_fused_and_removal_restores_the_weights_bit_for_bit(pipe, lora_a, tmp_path):
    path = write_kohya(lora_a, tmp_path / "a.safetensors")
    modules = {"denoiser": pipe.denoiser, "text_encoder": pipe.text_encoder}
    before = {t: {k: v.clone() for k, v in m.state_dict().items()} for t, m in modules.items()}
    pipe.load_adapter(path, scale=SCALE, fuse=True)
    fused = sfumato_images(pipe)[0]
    changed = [k for k, v in pipe.denoiser.state_dict().items() if not torch.equal(v, before["denoiser"][k])]
    pipe.remove_adapter(0)
    pipe.load_adapter(path, scale=SCALE, fuse=False)
    assert pipe.denoiser.state_dict().keys() != before["denoiser"].keys()  # a parametrization adds at run time
    unfused = sfumato_images(pipe)[0]
    pipe.remove_adapter(0)
    assert len(changed) == len([k for k in lora_a if k[0] == "unet"])  # fused: merged into the weights
    assert np.abs(fused - unfused).max() < 1e-5
    for table, module in modules.items():
        after = module.state_dict()
        assert list(after) == list(before[table])
        assert all(torch.equal(after[k], before[table][k]) for k in after), table


def test_stacked_loras_act_with_their_own_scales(pipe, reference, models, lora_a, lora_b, tmp_path):
    first = write_peft(lora_a, tmp_path / "a.safetensors")
    second = write_kohya(lora_b, tmp_path / "b.safetensors")
    pipe.load_adapter(first, scale=SCALE)
    pipe.load_adapter(second, scale=-0.4, fuse=False)
    try:
        assert_same(sfumato_images(pipe), reference_images(reference, models, (lora_a, SCALE), (lora_b, -0.4)))
        pipe.set_adapter_scales({"a": 0.3, 1: 0.5})
        assert [a.scale for a in pipe.spec.adapters] == [0.3, 0.5]  # the lock will record them
        assert_same(sfumato_images(pipe), reference_images(reference, models, (lora_a, 0.3), (lora_b, 0.5)))
    finally:
        pipe.remove_adapter("b")
        pipe.remove_adapter("a")
    assert pipe.spec.adapters == []


def test_targets_restrict_a_lora_to_the_text_encoder(pipe, reference, models, lora_a, tmp_path):
    path = write_kohya(lora_a, tmp_path / "a.safetensors")
    text_only = {k: v for k, v in lora_a.items() if k[0] == "text_encoder"}
    adapter = pipe.load_adapter(path, scale=SCALE, targets=["text_encoder"])
    try:
        assert len(adapter.patches) == len(text_only)
        assert_same(sfumato_images(pipe), reference_images(reference, models, (text_only, SCALE)))
    finally:
        pipe.remove_adapter(adapter)
