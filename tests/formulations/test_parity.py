"""Flow matching and EDM sampled by sfumato's ``euler`` equal diffusers' ``FlowMatchEulerDiscreteScheduler``
(shift 3, SD3's setting) and ``EDMEulerScheduler``, run as a loop on the same network and latents,
with classifier-free guidance: at most 2/255 apart on 8-bit images."""

from __future__ import annotations

import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

STEPS, SCALE = 8, 3.0
DIT = {"sample_size": 8, "in_channels": 3, "patch_size": 2, "num_layers": 2, "num_attention_heads": 2,
       "attention_head_dim": 8}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A perturbed class-conditional DiT (4 classes, null class 4) as a diffusers folder and module."""
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(**DIT, out_channels=3, num_embeds_ada_norm=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    folder = tmp_path_factory.mktemp("dit") / "transformer"
    model.save_pretrained(folder)
    return folder, model.eval()


def pipeline(folder, diffusion: dict) -> sfumato.Pipeline:
    return sfumato.load_pipeline({
        "task": {"type": "class-to-image", "height": 8, "width": 8},
        "autoencoder": {"type": "identity"},
        "denoiser": {"type": "dit", **DIT, "num_classes": 4, "weights": str(folder)},
        "diffusion": diffusion,
        "scheduler": {"type": "euler", "steps": STEPS},
        "guidance": [{"type": "cfg", "scale": SCALE}],
    })


def reference_loop(model, scheduler, latents: torch.Tensor, labels: list[int], scale_input) -> torch.Tensor:
    """diffusers' pipelines' loop: CFG on the batched [uncond, cond] output, then ``scheduler.step``."""
    x = latents * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts at sigma = 1
    classes = torch.tensor([4] * len(labels) + labels)
    with torch.no_grad():
        for t in scheduler.timesteps:
            batch = scale_input(torch.cat([x, x]), t)
            out = model(batch, timestep=t.expand(batch.shape[0]), class_labels=classes).sample
            uncond, cond = out.chunk(2)
            x = scheduler.step(uncond + SCALE * (cond - uncond), t, x).prev_sample
    return x


def as_8bit(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round()


def assert_same_images(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert theirs.std() > 0.1  # not flat: a wrong conversion would show
    difference = (as_8bit(ours) - as_8bit(theirs)).abs().max().item()
    assert difference <= 2, f"{difference} levels apart"
    return (ours - theirs).abs().max().item()


def test_flow_euler_equals_flowmatch_euler_with_shift_3(network):
    folder, model = network
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    ours = pipeline(folder, {"type": "flow", "shift": 3.0})(labels=[1, 2], latents=latents, progress=False).decoded
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(STEPS)
    theirs = reference_loop(model, scheduler, latents, [1, 2], lambda x, t: x)
    assert assert_same_images(ours, theirs) < 1e-3


def test_edm_euler_equals_diffusers_edm_euler(network):
    folder, model = network
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    ours = pipeline(folder, {"type": "edm"})(labels=[0, 3], latents=latents, progress=False).decoded
    scheduler = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    scheduler.set_timesteps(STEPS)
    theirs = reference_loop(model, scheduler, latents, [0, 3], scheduler.scale_model_input)
    assert assert_same_images(ours, theirs) < 1e-3


def test_flow_plan_is_diffusers_schedule(network):
    folder, _ = network
    pipe = pipeline(folder, {"type": "flow", "shift": 3.0})
    plan = pipe.scheduler.plan(pipe.schedule, STEPS)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(STEPS)
    torch.testing.assert_close(plan.sigmas, scheduler.sigmas, rtol=0, atol=1e-7)
    assert plan.init_noise_sigma == 1.0
