"""The samplers added for sampler breadth generate, on the tiny SD 1.x pipeline, what diffusers'
``StableDiffusionPipeline`` generates with the matching scheduler class: same prompt, initial
latents and classifier-free guidance 7.5 as ``test_parity``; the 8-bit images differ by at most
2 levels (2/255), as the issue asks of every sampler.

Each row sets the diffusers class with ``from_config`` of the folder's (SD 1.5) scheduler config
and loads the sfumato pipeline from the same folder with only ``[scheduler]`` fields overridden
(none for PLMS: the folder's own PNDMScheduler config maps to it).
"""

from __future__ import annotations

import numpy as np
import pytest

import sfumato

diffusers = pytest.importorskip("diffusers")

#: diffusers' KDPM2 and DEIS schedulers call numpy on tensors once per level, warning each time.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

from sd.test_parity import PROMPT, STEPS, initial_latents, sfumato_images  # noqa: E402
from sd.tiny_sd import SIZE  # noqa: E402

#: (sfumato [scheduler] overrides, diffusers class name, its config overrides).
ROWS = {
    "lms": ({"scheduler.type": "lms", "scheduler.lower_order_final": False}, "LMSDiscreteScheduler", {}),
    "lms-karras": ({"scheduler.type": "lms", "scheduler.lower_order_final": False, "scheduler.sigmas": "karras"},
                   "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "plms": ({}, "PNDMScheduler", {}),  # the folder's own scheduler_config.json: PLMS as SD 1.5 ships it
    "pndm": ({"scheduler.skip_prk_steps": False}, "PNDMScheduler", {"skip_prk_steps": False}),
    "dpm2": ({"scheduler.type": "dpm2"}, "KDPM2DiscreteScheduler", {}),
    "dpmpp-3m": ({"scheduler.type": "dpmpp-3m"}, "DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "unipc": ({"scheduler.type": "unipc"}, "UniPCMultistepScheduler", {}),
    "unipc-order3-karras": ({"scheduler.type": "unipc", "scheduler.order": 3, "scheduler.sigmas": "karras"},
                            "UniPCMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
}


@pytest.fixture(scope="module")
def reference_pipeline(tiny_sd):
    return diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None,
                                                             requires_safety_checker=False)


@pytest.mark.parametrize("row", list(ROWS))
def test_diffusers_folder_generates_what_diffusers_generates(tiny_sd, reference_pipeline, row):
    overrides, class_name, config = ROWS[row]
    original = reference_pipeline.scheduler
    reference_pipeline.scheduler = getattr(diffusers, class_name).from_config(original.config, **config)
    try:
        theirs = reference_pipeline(
            PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
            latents=initial_latents(), output_type="np").images  # (B, H, W, 3) in [0, 1]
    finally:
        reference_pipeline.scheduler = original
    floats, pil = sfumato_images(sfumato.load_pipeline(tiny_sd, overrides))
    assert 0.05 < theirs.std()  # the images are not flat
    ours_uint8 = np.asarray(pil[0], dtype=np.int16)
    theirs_uint8 = (theirs[0] * 255).round().astype(np.int16)  # diffusers' numpy_to_pil
    assert np.abs(floats - theirs).max() <= 2 / 255 and np.abs(ours_uint8 - theirs_uint8).max() <= 2
