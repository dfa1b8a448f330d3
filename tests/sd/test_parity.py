"""A Stable Diffusion 1.x checkpoint loaded by sfumato generates what diffusers'
``StableDiffusionPipeline`` generates: same prompt, same initial latents, classifier-free
guidance 7.5 with the empty negative prompt, for DDIM, Euler and DPM-Solver++(2M), from the
diffusers folder and from the same weights as an SD 1.x single file.

Images are compared as floats in [0, 1] before uint8 rounding, ``(decode(latents) / 2 + 0.5)``
clamped, which is diffusers' ``output_type="np"``; the PNG-bound uint8 images may then differ by
one level where a value sits on a rounding boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SD15_SCHEDULER, SIZE, tiny_architecture_overrides  # noqa: E402

PROMPT = "a red circle above a blue square"
STEPS = 4
TOLERANCE = 1e-3
#: sfumato scheduler type -> the diffusers class set on the reference pipeline with from_config.
SCHEDULERS = {
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "dpmpp-2m": diffusers.DPMSolverMultistepScheduler,
}


def initial_latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference_pipeline(tiny_sd):
    return diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)


def reference_images(pipe, scheduler: str) -> np.ndarray:
    pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    out = pipe(
        PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
        latents=initial_latents(), output_type="np",
    )
    return out.images  # (B, H, W, 3) in [0, 1]


def sfumato_images(pipe: sfumato.Pipeline) -> tuple[np.ndarray, list]:
    result = pipe(PROMPT, negative_prompt="", latents=initial_latents(), steps=STEPS, progress=False)
    floats = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    return floats, result.images


def assert_same_images(ours: tuple[np.ndarray, list], theirs: np.ndarray) -> None:
    floats, pil = ours
    assert floats.shape == theirs.shape
    assert 0.05 < theirs.std()  # the images are not flat: a wrong weight would show
    assert np.abs(floats - theirs).max() < TOLERANCE
    as_uint8 = (theirs * 255).round().astype(np.int16)  # diffusers' numpy_to_pil
    assert np.abs(np.asarray(pil[0], dtype=np.int16) - as_uint8[0]).max() <= 1


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_diffusers_folder_generates_what_diffusers_generates(tiny_sd, reference_pipeline, scheduler):
    pipe = sfumato.load_pipeline(tiny_sd, {"scheduler.type": scheduler})  # the folder itself loads as PLMS
    assert pipe.spec.scheduler.type == scheduler and pipe.guidance[0].spec.scale == 7.5
    assert_same_images(sfumato_images(pipe), reference_images(reference_pipeline, scheduler))


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_single_file_generates_what_diffusers_generates(tiny_sd, tiny_sd_file, reference_pipeline, scheduler):
    overrides = tiny_architecture_overrides(tiny_sd)
    if scheduler != "ddim":
        overrides = {"scheduler.type": scheduler, **overrides}
    pipe = sfumato.load_pipeline(tiny_sd_file, overrides)
    assert_same_images(sfumato_images(pipe), reference_images(reference_pipeline, scheduler))


def test_switching_sampler_of_a_config_that_states_its_spacing(tiny_sd, tmp_path):
    """diffusers' ``from_config`` keeps the spacing a config states; so does a sfumato
    ``scheduler.type`` override, which keeps the fields both samplers have."""
    import shutil

    folder = shutil.copytree(tiny_sd, tmp_path / "pipeline")
    diffusers.DDIMScheduler.from_config({**SD15_SCHEDULER, "timestep_spacing": "leading"}).save_pretrained(
        folder / "scheduler")  # writes every setting, as save_pretrained of a whole pipeline does
    reference = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                                  requires_safety_checker=False)
    theirs = reference_images(reference, "euler")
    assert reference.scheduler.config.timestep_spacing == "leading"
    pipe = sfumato.load_pipeline(folder, {"scheduler.type": "euler"})
    assert (pipe.spec.scheduler.spacing, pipe.spec.scheduler.steps_offset) == ("leading", 1)  # not Euler's defaults
    assert_same_images(sfumato_images(pipe), theirs)
