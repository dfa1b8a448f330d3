"""The benchmark cases: each builds sfumato and its reference from the same saved weights and
returns zero-argument calls to time.

A case's ``build(root, size, variant)`` returns ``{row: Pair}`` (one row for most cases, one per
sampler for the scheduler case). A ``Variant`` says how sfumato runs (dtype and the ``[runtime]``
options) and in which dtype the reference runs; the compiled variants measure sfumato's fastest
CPU options against the reference in plain eager float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import sfumato

from . import references
from .measure import no_grad

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Variant:
    """:param dtype: sfumato's ``[runtime] dtype``. :param reference_dtype: the reference's dtype.
    :param compile: ``[runtime] compile`` (the denoiser). :param channels_last: ``[runtime] channels_last``.
    :param autocast: ``[runtime] autocast`` (float32 weights, operations in this dtype)."""

    name: str
    dtype: str = "float32"
    reference_dtype: str = "float32"
    compile: bool = False
    channels_last: bool = False
    autocast: str = "none"

    def runtime(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": self.dtype, "compile": self.compile, "channels_last": self.channels_last,
                "autocast": self.autocast}


VARIANTS = {
    "fp32": Variant("fp32"),
    "bf16": Variant("bf16", "bfloat16", "bfloat16"),
    "compiled": Variant("compiled", compile=True, channels_last=True),
    "compiled-bf16": Variant("compiled-bf16", "bfloat16", compile=True, channels_last=True),
    "autocast-bf16": Variant("autocast-bf16", autocast="bfloat16"),
}


@dataclass
class Pair:
    """One benchmark row: the two calls, and how to read their times.

    :param steps: the calls run this many steps; times are reported per step.
    :param outputs: ``(sfumato, reference)`` output tensors compared once (the weights are the same).
    """

    sfumato: Callable[[], Any]
    reference: Callable[[], Any]
    reference_name: str
    steps: int = 1
    outputs: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable[[Path, str, Variant], dict[str, Pair]]
    variants: tuple[str, ...] = ("fp32", "bf16")
    #: At most this many timed rounds (slow cases).
    max_repeats: int | None = None


def _denoiser_pipeline(folder: Path, variant: Variant) -> sfumato.Pipeline:
    """A sfumato pipeline holding only the U-Net of a diffusers folder, placed by ``[runtime]``."""
    from sfumato_unet import spec_from_diffusers_config

    spec = spec_from_diffusers_config(json.loads((folder / "config.json").read_text()))
    denoiser = spec.model_copy(update={"weights": str(folder)}).model_dump(mode="json")
    return sfumato.load_pipeline({"runtime": variant.runtime(), "denoiser": denoiser})


def _reference_unet(folder: Path, variant: Variant):
    import diffusers

    cls = diffusers.UNet2DConditionModel if "cross_attention_dim" in json.loads((folder / "config.json").read_text()) \
        else diffusers.UNet2DModel
    return cls.from_pretrained(folder, torch_dtype=DTYPES[variant.reference_dtype]).eval()


def _outputs(ours: Callable[[], Any], theirs: Callable[[], Any]):
    return lambda: (no_grad(ours)().float(), no_grad(theirs)().float())


def unet_pixel(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    config = references.UNET_PIXEL[size]
    folder = references.unet_folder(root, f"unet-pixel-{size}", config)
    pipe = _denoiser_pipeline(folder, variant)
    ours, theirs = pipe.denoiser, _reference_unet(folder, variant)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, config["in_channels"], config["sample_size"], config["sample_size"], generator=g)
    t, labels = torch.tensor([999.0, 500.0]), torch.tensor([3, 7])
    cond = sfumato.Conditioning(labels=labels)

    def call_ours():
        with pipe.spec.runtime.autocast_context(pipe.device):  # what a pipeline call enters
            return ours(x.to(DTYPES[variant.dtype]), t, cond)

    def call_theirs():
        return theirs(x.to(DTYPES[variant.reference_dtype]), t, class_labels=labels).sample

    return {"unet-pixel": Pair(no_grad(call_ours), no_grad(call_theirs), "diffusers UNet2DModel",
                               outputs=_outputs(call_ours, call_theirs))}


def unet_sd(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    config = references.UNET_SD[size]
    folder = references.unet_folder(root, f"unet-sd-{size}", config)
    pipe = _denoiser_pipeline(folder, variant)
    ours, theirs = pipe.denoiser, _reference_unet(folder, variant)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, config["sample_size"], config["sample_size"], generator=g)
    t = torch.tensor([999.0, 500.0])
    tokens = torch.randn(2, 77, config["cross_attention_dim"], generator=g)
    cond = sfumato.Conditioning(tokens=tokens)

    def call_ours():
        with pipe.spec.runtime.autocast_context(pipe.device):
            return ours(x.to(DTYPES[variant.dtype]), t, cond)

    def call_theirs():
        dtype = DTYPES[variant.reference_dtype]
        return theirs(x.to(dtype), t, encoder_hidden_states=tokens.to(dtype)).sample

    return {"unet-sd": Pair(no_grad(call_ours), no_grad(call_theirs), "diffusers UNet2DConditionModel",
                            outputs=_outputs(call_ours, call_theirs))}


def vae_decode(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    import diffusers
    from sfumato_vae import AutoencoderKL

    config = references.VAE[size]
    folder = references.vae_folder(root, f"vae-{size}", config)
    spec = AutoencoderKL.spec_from_diffusers_config(folder / "config.json", weights=str(folder))
    pipe = sfumato.load_pipeline({"runtime": variant.runtime(), "autoencoder": spec.model_dump(mode="json")})
    ours = pipe.autoencoder
    theirs = diffusers.AutoencoderKL.from_pretrained(folder, torch_dtype=DTYPES[variant.reference_dtype]).eval()
    latent = config["sample_size"] // 2 ** (len(config["block_out_channels"]) - 1)
    z = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0))

    def call_ours():
        return ours.decode_unscaled(z.to(DTYPES[variant.dtype]))

    def call_theirs():
        return theirs.decode(z.to(DTYPES[variant.reference_dtype])).sample

    return {"vae-decode": Pair(no_grad(call_ours), no_grad(call_theirs), "diffusers AutoencoderKL.decode",
                               outputs=_outputs(call_ours, call_theirs))}


def _clip_pair(root: Path, size: str, variant: Variant):
    import transformers
    from sfumato_clip import load_clip

    folder = references.clip_folder(root, f"clip-{size}", references.CLIP[size])
    ours = load_clip(folder).to(DTYPES[variant.dtype]).eval()
    theirs = transformers.CLIPModel.from_pretrained(folder, dtype=DTYPES[variant.reference_dtype]).eval()
    return ours, theirs


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features``; 4.x returned the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def caption_ids(batch: int, length: int = 77, seed: int = 0) -> torch.Tensor:
    """Random token ids, start token first and end-of-text padding after a random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 49406, (batch, length), generator=g)
    ids[:, 0] = references.CLIP_TOKENS["bos_token_id"]
    for row, n in enumerate(torch.randint(4, 20, (batch,), generator=g).tolist()):
        ids[row, n:] = references.CLIP_TOKENS["eos_token_id"]
    return ids


def clip_text(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    ours, theirs = _clip_pair(root, size, variant)
    ids = caption_ids(16)

    def call_ours():
        return ours.encode_text(ids)

    def call_theirs():
        return _features(theirs.get_text_features(input_ids=ids))

    return {"clip-text": Pair(no_grad(call_ours), no_grad(call_theirs), "transformers CLIPModel.get_text_features",
                              outputs=_outputs(call_ours, call_theirs))}


def clip_image(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    ours, theirs = _clip_pair(root, size, variant)
    side = references.CLIP[size]["vision"]["image_size"]
    pixels = torch.randn(16, 3, side, side, generator=torch.Generator().manual_seed(0))

    def call_ours():
        return ours.encode_image(pixels.to(DTYPES[variant.dtype]))

    def call_theirs():
        return _features(theirs.get_image_features(pixel_values=pixels.to(DTYPES[variant.reference_dtype])))

    return {"clip-image": Pair(no_grad(call_ours), no_grad(call_theirs), "transformers CLIPModel.get_image_features",
                               outputs=_outputs(call_ours, call_theirs))}


def clip_train(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    """One optimisation step: contrastive loss forward, backward and AdamW."""
    from sfumato_clip import clip_loss

    ours, theirs = _clip_pair(root, size, variant)
    ours.train(), theirs.train()
    side = references.CLIP[size]["vision"]["image_size"]
    pixels = torch.randn(16, 3, side, side, generator=torch.Generator().manual_seed(0)).to(DTYPES[variant.dtype])
    ids = caption_ids(16)
    optimisers = [torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (ours, theirs)]

    def step_ours():
        loss = clip_loss(ours.encode_image(pixels), ours.encode_text(ids), ours.logit_scale)
        loss.backward()
        optimisers[0].step()
        optimisers[0].zero_grad(set_to_none=True)
        return loss.detach()

    def step_theirs():
        loss = theirs(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        optimisers[1].step()
        optimisers[1].zero_grad(set_to_none=True)
        return loss.detach()

    return {"clip-train-step": Pair(step_ours, step_theirs, "transformers CLIPModel(return_loss=True) + AdamW")}


SCHEDULER_PAIRS = {
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpmpp-3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    # diffusers has no RES solver: its multistep solver of the same order
    "res-multistep": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm2-ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    # diffusers has no 2S ancestral sampler: its deterministic relative
    "dpmpp-2s-ancestral": ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp-sde": ("DPMSolverSDEScheduler", {}),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp-3m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "restart": ("HeunDiscreteScheduler", {}),  # diffusers has no restart sampler: its Heun steps
    # diffusers has no ER-SDE solver: its multistep SDE solver of the same order
    "er-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "sa-solver": ("SASolverScheduler", {"predictor_order": 3, "corrector_order": 4}),
}


def schedulers(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    """Per-step overhead of each sampler: a trivial model (a multiply) on a small sample isolates
    the scheduler's own work. sfumato's figure includes the schedule's conversion of the model
    output to a ``Prediction`` (diffusers does it inside ``step``)."""
    import diffusers

    steps = 50 if size == "full" else 5
    shape = (1, 4, 8, 8)
    schedule = sfumato.NoiseSchedule()
    rows = {}
    for kind, (class_name, options) in SCHEDULER_PAIRS.items():
        scheduler = sfumato.build("scheduler", {"type": kind})
        reference = getattr(diffusers, class_name)(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **options)
        rows[f"scheduler-{kind}"] = Pair(
            _sfumato_sampling(scheduler, schedule, steps, shape), _diffusers_sampling(reference, steps, shape),
            f"diffusers {class_name}", steps=steps,
        )
    return rows


def _sfumato_sampling(scheduler, schedule, steps: int, shape) -> Callable[[], Any]:
    plan = scheduler.plan(schedule, steps)
    draws = scheduler.noise_draws  # a step's noise: shaped like x, or [k, *x.shape] for k draws
    noise = torch.randn(shape if draws == 1 else (draws, *shape), generator=torch.Generator().manual_seed(1))

    def model(x, t):
        return schedule.to_prediction(0.5 * x, x, t)

    def run():
        x, carry = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * plan.init_noise_sigma, {}
        for i in range(len(plan)):
            x, _, carry = scheduler.step(model, x, plan, i, carry, noise if scheduler.stochastic else None)
        return x

    return no_grad(run)


def _diffusers_sampling(scheduler, steps: int, shape) -> Callable[[], Any]:
    import inspect

    takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    def run():
        scheduler.set_timesteps(steps)  # resets the multistep history (as a pipeline call does)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
        generator = torch.Generator().manual_seed(1)
        for t in scheduler.timesteps:
            output = 0.5 * scheduler.scale_model_input(x, t)
            kwargs = {"generator": generator} if takes_generator else {}
            x = scheduler.step(output, t, x, **kwargs).prev_sample
        return x

    return no_grad(run)


def text_to_image(root: Path, size: str, variant: Variant) -> dict[str, Pair]:
    """The whole pipeline call: prompt and empty negative prompt encoded, 20 DDIM steps with
    classifier-free guidance 7.5 (the U-Net runs on a batch of 2), VAE decode, PIL images."""
    import diffusers

    folder = references.sd_folder(root, size)
    steps = 20 if size == "full" else 2
    side = references.SD_UNET[size]["sample_size"] // 2  # 16x16 latents: 20 CFG steps fit the suite's time
    downscale = 2 ** (len(references.SD_VAE[size]["block_out_channels"]) - 1)
    ours = sfumato.load_pipeline(folder, {f"runtime.{k}": v for k, v in variant.runtime().items()})
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=DTYPES[variant.reference_dtype], safety_checker=None, requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    prompt = "a red circle above a blue square"

    def call_ours(**kwargs):
        return ours(prompt, negative_prompt="", latents=latents, steps=steps, height=side * downscale,
                    width=side * downscale, progress=False)

    def call_theirs(output_type="pil"):
        return theirs(prompt, negative_prompt="", latents=latents.to(DTYPES[variant.reference_dtype]),
                      num_inference_steps=steps, guidance_scale=7.5, height=side * downscale, width=side * downscale,
                      output_type=output_type)

    def outputs():
        ours_images = (call_ours().decoded.float() / 2 + 0.5).clamp(0, 1)
        theirs_images = torch.from_numpy(call_theirs("np").images).permute(0, 3, 1, 2).float()
        return ours_images, theirs_images

    return {"text-to-image": Pair(call_ours, call_theirs, "diffusers StableDiffusionPipeline", outputs=outputs)}


CASES = {
    case.name: case for case in (
        Case("unet-pixel", "U-Net forward, pixel-space class-conditional model, 32x32, batch 2", unet_pixel,
             ("fp32", "bf16", "compiled", "compiled-bf16", "autocast-bf16")),
        Case("unet-sd", "U-Net forward, SD 1.x topology, 32x32 latents, 77 tokens, batch 2", unet_sd,
             ("fp32", "bf16", "compiled-bf16", "autocast-bf16")),
        Case("vae-decode", "KL-VAE decode, SD 1.x topology (downscale 8), 32x32 latents, batch 1", vae_decode),
        Case("clip-text", "CLIP text tower + projection, 16 captions x 77 tokens", clip_text),
        Case("clip-image", "CLIP vision tower + projection, 16 images 128x128, patch 16", clip_image),
        Case("clip-train", "CLIP training step (contrastive loss, backward, AdamW), batch 16", clip_train, ("fp32",)),
        Case("schedulers", "sampler overhead per step (trivial model, [1, 4, 8, 8], 50 steps)", schedulers, ("fp32",)),
        Case("text-to-image", "text-to-image, 32x32 (16x16 latents), 20 DDIM steps, CFG 7.5", text_to_image,
             ("fp32", "compiled-bf16", "autocast-bf16"), max_repeats=3),
    )
}
