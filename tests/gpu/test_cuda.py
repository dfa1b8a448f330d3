"""The CUDA paths, on a machine with a GPU (skipped elsewhere; CI has none).

Run with ``python -m pytest -m cuda tests/gpu`` (``SFUMATO_TEST_DEVICE=cpu`` runs the same code on
the CPU, where the sync and float16-training tests skip: a check of the tests themselves). What
they hold:

- the sampling loop never waits for the device: no place in a pipeline call synchronises more
  often in a 6-step run than in a 2-step one, for every scheduler (the syncs are the setup's
  copies and the final checks, none per step);
- the tiny SD 1.x checkpoint generates on the GPU what diffusers generates there, in float32,
  float16 and bfloat16;
- the built-in ``shapes`` model runs in float16 and bfloat16 on the GPU: its U-Net agrees with
  the CPU's float32 output, and a full generation gives finite images;
- ``[runtime] compile`` and ``[runtime] autocast`` on CUDA agree with eager float32;
- training with ``[train] precision = "float16"`` (loss scaling) and ``"bfloat16"`` runs on CUDA and
  saves float32 weights.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import sfumato

DEVICE = os.environ.get("SFUMATO_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA only")

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE, write_tiny_sd  # noqa: E402
from sfumato_training_helpers import UNET, losses, run, train_spec, write_class_folder  # noqa: E402

PROMPT = "a red circle above a blue square"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


def latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


def synchronisations(call) -> list[str]:
    """Where ``call`` made the host wait for the device: ``file:line`` of each synchronising op
    (torch's sync debug mode warns at every one)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


@needs_cuda
@pytest.mark.parametrize("scheduler", sfumato.get_registry().types("scheduler"))
def test_sampling_loop_never_waits_for_the_device(tiny_sd, scheduler):
    pipe = sfumato.load_pipeline(tiny_sd, {"scheduler.type": scheduler, "runtime.device": DEVICE})
    pipe(PROMPT, latents=latents(), steps=2, progress=False)  # warm-up: lazy initialisation
    short = synchronisations(lambda: pipe(PROMPT, latents=latents(), steps=2, progress=False))
    long = synchronisations(lambda: pipe(PROMPT, latents=latents(), steps=6, progress=False))
    # No place syncs more often in the longer run (a one-off lazy initialisation may land in either).
    per_step = Counter(long) - Counter(short)
    assert not per_step, f"syncs that grow with the steps: {dict(per_step)}\n2 steps: {short}\n6 steps: {long}"


@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-3), ("float16", 2e-2), ("bfloat16", 6e-2)])
def test_tiny_sd_generates_what_diffusers_generates_on_cuda(tiny_sd, dtype, tolerance):
    reference = diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_sd, torch_dtype=DTYPES[dtype], safety_checker=None, requires_safety_checker=False).to(DEVICE)
    reference.set_progress_bar_config(disable=True)
    reference.scheduler = diffusers.DDIMScheduler.from_config(reference.scheduler.config)  # sfumato's reading
    theirs = reference(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=4, guidance_scale=7.5,
                       latents=latents().to(DEVICE, DTYPES[dtype]), output_type="np").images
    pipe = sfumato.load_pipeline(tiny_sd, {"runtime.device": DEVICE, "runtime.dtype": dtype})
    result = pipe(PROMPT, negative_prompt="", latents=latents(), steps=4, progress=False)
    ours = (result.decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    assert result.decoded.device.type == DEVICE and result.decoded.dtype == DTYPES[dtype]
    assert theirs.std() > 0.05
    difference = float(np.abs(ours - theirs).max())
    print(f"tiny SD on {DEVICE}, {dtype}: max |sfumato - diffusers| = {difference:.2e}")
    assert difference < tolerance


@pytest.mark.parametrize("dtype, tolerance", [("float16", 2e-2), ("bfloat16", 8e-2)])
def test_builtin_model_runs_in_half_precision_on_cuda(dtype, tolerance):
    cpu = sfumato.load_pipeline("shapes", {"runtime.device": "cpu", "runtime.dtype": "float32"})
    gpu = sfumato.load_pipeline("shapes", {"runtime.device": DEVICE, "runtime.dtype": dtype})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cpu.denoiser.in_channels, 16, 16, generator=g)
    t = torch.tensor([900.0, 300.0])
    tokens = cpu.text_encoder.encode([PROMPT, ""])
    with torch.inference_mode():
        expected = cpu.denoiser(x, t, sfumato.Conditioning(tokens=tokens.tokens, mask=tokens.mask)).float()
        gpu_tokens = gpu.text_encoder.encode([PROMPT, ""])
        got = gpu.denoiser(x.to(DEVICE, DTYPES[dtype]), t.to(DEVICE),
                           sfumato.Conditioning(tokens=gpu_tokens.tokens, mask=gpu_tokens.mask)).float().cpu()
    relative = float((got - expected).norm() / expected.norm())
    print(f"shapes U-Net, {DEVICE} {dtype} vs CPU float32: relative error {relative:.2e}")
    assert relative < tolerance
    result = gpu(["a red circle", "a blue square"], steps=10, seed=0, progress=False)  # raises on NaN
    assert len(result.images) == 2 and torch.isfinite(result.decoded).all()


@pytest.mark.parametrize("precision", [pytest.param("float16", marks=needs_cuda), "bfloat16"])
def test_mixed_precision_training_on_cuda(tmp_path, precision):
    folder = write_class_folder(tmp_path / "classes")
    spec = train_spec({"type": "train-diffusion", "conditioning": "class"}, folder, steps=6,
                      train={"precision": precision}, runtime={"device": DEVICE},
                      denoiser={**UNET, "num_classes": 2, "null_class": True}, diffusion={"timesteps": 100})
    result = run(spec, tmp_path / "run")
    values = losses(result)
    assert len(values) == 6 and all(math.isfinite(v) for v in values), values
    weights = sfumato.load_weights(result.weights["denoiser"])
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())


def _unet_output(pipe: sfumato.Pipeline, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), pipe.spec.runtime.autocast_context(pipe.device):
        return pipe.denoiser(x.to(pipe.device, pipe.dtype), t.to(pipe.device),
                             sfumato.Conditioning(tokens=tokens.to(pipe.device, pipe.dtype))).float().cpu()


@pytest.mark.parametrize("options, tolerance", [
    # cuDNN convolutions run in TF32 by default; compiled kernels sum in another order (measured
    # on an H200: 3.8e-4).
    ({"runtime.compile": True}, 2e-3),
    ({"runtime.compile": True, "runtime.channels_last": True}, 2e-3),
    ({"runtime.autocast": "float16"}, 2e-2),
    ({"runtime.autocast": "bfloat16"}, 8e-2),
])
def test_runtime_options_agree_with_eager_float32_on_cuda(tiny_sd, options, tolerance):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=g), torch.tensor([999.0, 400.0])
    tokens = torch.randn(2, 77, 32, generator=g)
    eager = _unet_output(sfumato.load_pipeline(tiny_sd, {"runtime.device": DEVICE}), x, t, tokens)
    other = _unet_output(sfumato.load_pipeline(tiny_sd, {"runtime.device": DEVICE, **options}), x, t, tokens)
    relative = float((other - eager).norm() / eager.norm())
    print(f"{options}: relative error {relative:.2e}")
    assert relative < tolerance
