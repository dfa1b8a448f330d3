"""Model patches and the guidance built on them (``pag``, ``seg``, ``skip-layer``).

The U-Net and the DiT advertise their points; a patch changes only its rows of one forward and
nothing once removed; ``[[guidance]]`` of ``cfg`` then ``pag`` generates what diffusers'
``StableDiffusionPAGPipeline`` generates (<= 2/255) in one forward of ``[negative, positive,
perturbed]`` per call; SEG's blurred queries and skip-layer's skipped blocks equal diffusers' hooks
on the same weights; the step window decides which calls carry the perturbed rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sfumato
from guidance.toys import sample
from sfumato.testing import GuidanceConformance

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE, write_tiny_sd  # noqa: E402

UNET = {"type": "unet", "in_channels": 4, "out_channels": 4, "block_out_channels": [8, 16], "attention": [True, True],
        "cross_attention_dim": 8, "norm_num_groups": 4, "attention_heads": 2}
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """The tiny SD 1.x folder of ``sd.tiny_sd`` (written by diffusers)."""
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd-pag"))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return sfumato.build("denoiser", UNET).eval()


def text_cond(batch: int = 2) -> sfumato.Conditioning:
    g = torch.Generator().manual_seed(4)
    return sfumato.Conditioning(tokens=torch.randn(batch, 3, 8, generator=g),
                                negative=sfumato.Conditioning(tokens=torch.zeros(batch, 3, 8)))


# -- the points and the patch mechanism -------------------------------------------------------------


def test_unet_and_dit_advertise_their_points(unet):
    points = unet.perturbation_points()
    assert points["mid_block.attentions.0.transformer_blocks.0.attn1"] == "self-attention"
    assert points["mid_block.attentions.0.transformer_blocks.0.attn2"] == "cross-attention"
    assert points["down_blocks.1.attentions.0.transformer_blocks.0"] == "block"
    pixel = sfumato.build("denoiser", {**UNET, "cross_attention_dim": None})
    assert pixel.perturbation_points()["mid_block.attentions.0"] == "self-attention"
    dit = sfumato.build("denoiser", {"type": "dit", "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
                                     "sample_size": 8, "in_channels": 4, "num_classes": 3})
    assert dit.perturbation_points() == {"transformer_blocks.0": "block", "transformer_blocks.0.attn1": "self-attention",
                                         "transformer_blocks.1": "block", "transformer_blocks.1.attn1": "self-attention"}


def test_a_patch_changes_only_its_rows_and_nothing_once_removed(unet):
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), text_cond(1)
    point = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    identity = sfumato.PointPatch(lambda q, k, v, attend, size: v, rows=slice(1, 2))
    with torch.no_grad():
        plain = unet(x, t, cond)
        with unet.patched({point: [identity]}):
            both = unet(torch.cat([x, x]), t.expand(2), sfumato.branches.Branch().conditioning_for(
                sfumato.Conditioning.cat([cond, cond])))
        with unet.patched({point: [sfumato.PointPatch(identity.function)]}):
            perturbed = unet(x, t, cond)
        after = unet(x, t, cond)
    torch.testing.assert_close(both[:1], plain, atol=1e-6, rtol=1e-6)  # row 0 ran the unpatched attention
    torch.testing.assert_close(both[1:], perturbed, atol=1e-6, rtol=1e-6)
    assert (perturbed - plain).abs().max() > 1e-3
    assert torch.equal(after, plain) and "point_patches" not in unet.get_submodule(point).__dict__
    with pytest.raises(KeyError, match="'mid_block' is not a perturbation point"):
        with unet.patched({"mid_block": [identity]}):
            pass


def test_layers_are_selected_like_diffusers_pag_applied_layers(unet):
    points = unet.perturbation_points()
    select = sfumato.model_patches.select_points
    assert select(points, ["mid"], "self-attention", "here") == ["mid_block.attentions.0.transformer_blocks.0.attn1"]
    assert select(points, [r"up_blocks\.1\.attentions\.[01]", "down_blocks.1"], "self-attention", "here") == [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1",  # in model order, whatever the patterns' order
        "up_blocks.1.attentions.0.transformer_blocks.0.attn1", "up_blocks.1.attentions.1.transformer_blocks.0.attn1",
    ]
    assert select({"blocks.1": "block", "blocks.10": "block"}, ["blocks.1"], "block", "here") == ["blocks.1"]
    with pytest.raises(sfumato.SpecError, match=r"\[\[guidance\]\] pag layers: 'middle' matches no self-attention "
                                                 r"point of the \[denoiser\]; its self-attention points are down_blocks"):
        select(points, ["middle"], "self-attention", "[[guidance]] pag layers")


# -- PAG against diffusers' pipeline ----------------------------------------------------------------


@pytest.mark.parametrize("layers, guidance_scale, size", [
    (["mid"], 7.5, 2 * SIZE),  # the mid block at 2x2 tokens (at 16 pixels it has one: identity = attention)
    (["down_blocks.1", "up_blocks.2.attentions.0"], 7.5, SIZE),
    (["down_blocks.1"], 1.0, SIZE),  # PAG alone: diffusers batches [cond, perturbed], cfg at scale 1 too
])
def test_cfg_then_pag_generates_what_diffusers_pag_pipeline_generates(tiny_sd, layers, guidance_scale, size):
    latents = torch.randn(1, 4, size // 2, size // 2, generator=torch.Generator().manual_seed(7))
    reference = diffusers.StableDiffusionPAGPipeline.from_pretrained(
        tiny_sd, safety_checker=None, requires_safety_checker=False, pag_applied_layers=layers)
    reference.scheduler = diffusers.DDIMScheduler.from_config(reference.scheduler.config)
    theirs = reference(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=4,
                       guidance_scale=guidance_scale, pag_scale=3.0, latents=latents, output_type="np").images
    overrides = {"scheduler.type": "ddim", "guidance.0.scale": guidance_scale}
    pipe = sfumato.load_pipeline(tiny_sd, overrides)
    pipe.guidance.append(sfumato.build("guidance", {"type": "pag", "scale": 3.0, "layers": layers}))
    batches = []
    hook = pipe.denoiser.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    result = pipe(PROMPT, negative_prompt="", latents=latents, steps=4, height=size, width=size, progress=False)
    hook.remove()
    ours = (result.decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert batches == [3 if guidance_scale > 1 else 2] * 4  # one forward per call, the perturbed rows in it
    assert 0.05 < theirs.std()
    assert np.abs(np.round(ours * 255) - np.round(theirs * 255)).max() <= 2
    plain = sfumato.load_pipeline(tiny_sd, overrides)(
        PROMPT, negative_prompt="", latents=latents, steps=4, height=size, width=size, progress=False)
    assert (plain.decoded - result.decoded).abs().max() > 5e-3  # PAG did something (the mid block: 4 tokens)


# -- SEG and skip-layer against diffusers' hooks ----------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 2.0, 9999999.0])
def test_seg_blur_equals_diffusers(sigma):
    from diffusers.hooks.smoothed_energy_guidance_utils import _gaussian_blur_2d

    from sfumato_guidance.perturbed import gaussian_blur

    query = torch.randn(2, 36, 5, generator=torch.Generator().manual_seed(0))  # (B, tokens of a 6x6 grid, channels)
    ours = gaussian_blur(query.transpose(1, 2).reshape(2, 5, 6, 6), sigma).reshape(2, 5, 36).transpose(1, 2)
    kernel = int(np.ceil(6 * sigma)) + 1 - int(np.ceil(6 * sigma)) % 2
    # diffusers blurs where sigma > its threshold and takes the mean below it (the reverse of SEG-SDXL's
    # inf_blur): ask each branch of it for the one that matches
    threshold = 1e9 if sigma >= 9999 else -1.0
    theirs = _gaussian_blur_2d(query.clone(), kernel, sigma, threshold)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def diffusers_unet(tiny_sd):
    return diffusers.UNet2DConditionModel.from_pretrained(tiny_sd / "unet").eval()


@pytest.mark.parametrize("sigma", [1.0, 9999999.0])
def test_seg_patch_on_the_unet_equals_diffusers_query_hook(tiny_sd, sigma):
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceHook

    from sfumato_guidance.perturbed import SmoothedEnergyGuidance

    reference, pipe = diffusers_unet(tiny_sd), sfumato.load_pipeline(tiny_sd)
    block = "down_blocks.1.attentions.0.transformer_blocks.0"
    # diffusers' hook blurs for sigma above its threshold and averages below it: pick the branch SEG-SDXL means
    registry = HookRegistry.check_if_exists_or_initialize(reference.get_submodule(f"{block}.attn1.to_q"))
    registry.register_hook(SmoothedEnergyGuidanceHook(sigma, blur_threshold_inf=1e9 if sigma >= 9999 else -1.0), "seg")
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([700.0, 300.0])
    tokens = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    patch = SmoothedEnergyGuidance.from_spec({"blur_sigma": sigma}).patch()
    with torch.no_grad(), pipe.denoiser.patched({f"{block}.attn1": [sfumato.PointPatch(patch)]}):
        ours = pipe.denoiser(x, t, sfumato.Conditioning(tokens=tokens))
        theirs = reference(x, t, encoder_hidden_states=tokens).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_skip_layer_patch_on_the_dit_equals_diffusers_layer_skip(tmp_path, perturb):
    from diffusers.hooks.layer_skip import LayerSkipConfig, _apply_layer_skip_hook

    from sfumato_dit import DiT
    from sfumato_guidance.perturbed import skipped_block

    torch.manual_seed(0)
    reference = perturb(diffusers.DiTTransformer2DModel(sample_size=8, patch_size=2, num_layers=3, num_attention_heads=2,
                                                        attention_head_dim=8, in_channels=4, num_embeds_ada_norm=10))
    reference.save_pretrained(tmp_path)
    model = DiT.from_diffusers(tmp_path).eval()
    _apply_layer_skip_hook(reference, LayerSkipConfig(indices=[1], fqn="transformer_blocks"))
    x, t, labels = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 600.0]), torch.tensor([3, 10])
    with torch.no_grad(), model.patched({"transformer_blocks.1": [sfumato.PointPatch(skipped_block)]}):
        ours = model(x, t, sfumato.Conditioning(labels=labels))
        theirs = reference(x, t, class_labels=labels).sample[:, :4]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# -- the guidance: formula, batching, step window, composition ----------------------------------------


@pytest.mark.parametrize("kind", ["pag", "seg", "skip-layer"])
def test_alone_it_batches_its_own_pair_and_adds_its_term(kind, unet):
    schedule = sfumato.NoiseSchedule()
    layers = ["down_blocks.1.attentions.0.transformer_blocks.0"] if kind == "skip-layer" else ["down_blocks.1"]
    spec = {"type": kind, "scale": 2.0, "layers": layers, **({"start": 0.0, "stop": 1.0} if kind == "skip-layer" else {})}
    method = sfumato.build("guidance", spec)
    batches = []
    hook = unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    base = sfumato.bind_predictor(unet, schedule)
    guided = method.wrap(base, sfumato.GuidanceContext(schedule=schedule, components={"denoiser": unet}))
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([300.0, 800.0]), text_cond()
    with torch.no_grad():
        out = guided(x, t, cond)
        hook.remove()
        points = sfumato.model_patches.select_points(unet.perturbation_points(), layers, method.point_kind, "here")
        with unet.patched({point: [sfumato.PointPatch(method.patch())] for point in points}):
            perturbed = base(x, t, cond)
        positive = base(x, t, cond)
    assert batches == [4]  # [positive, perturbed] of two samples
    torch.testing.assert_close(out.eps, positive.eps + 2.0 * (positive.eps - perturbed.eps), atol=1e-5, rtol=1e-5)
    assert (perturbed.eps - positive.eps).abs().max() > 1e-4


def test_skip_layer_perturbs_only_the_steps_of_its_window(unet):
    schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(betas="linear", beta_start=1e-4, beta_end=0.02))
    cfg = sfumato.build("guidance", {"type": "cfg", "scale": 3.0})
    skip = sfumato.build("guidance", {"type": "skip-layer", "scale": 2.8, "start": 0.2, "stop": 0.5,
                                      "layers": ["mid_block.attentions.0.transformer_blocks.0"]})
    batches = []
    hook = unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    sample(unet, schedule, "euler", [cfg, skip], text_cond(), (2, 4, 8, 8), components={"denoiser": unet}, steps=10)
    hook.remove()
    assert batches == [4, 4, 6, 6, 6, 4, 4, 4, 4, 4]  # steps 2 to 4: 0.2 <= i / 10 < 0.5


@pytest.mark.parametrize("scheduler", ["ddim", "euler-ancestral", "heun", "dpmpp-2m"])
@pytest.mark.parametrize("kind", ["pag", "seg", "skip-layer"])
def test_with_cfg_and_every_scheduler(kind, scheduler, unet):
    schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(betas="linear", beta_start=1e-4, beta_end=0.02))
    layers = ["transformer_blocks.0"] if kind == "skip-layer" else ["down_blocks.1", "mid"]
    cfg = sfumato.build("guidance", {"type": "cfg", "scale": 3.0})
    method = sfumato.build("guidance", {"type": kind, "scale": 2.0, "layers": layers, "start": 0.0, "stop": 1.0})
    neutral = sfumato.build("guidance", {"type": kind, "scale": 0.0, "layers": layers})
    run = dict(components={"denoiser": unet}, steps=3, seed=2)
    with torch.no_grad():
        plain = sample(unet, schedule, scheduler, [cfg], text_cond(), (2, 4, 8, 8), **run)
        guided = sample(unet, schedule, scheduler, [cfg, method], text_cond(), (2, 4, 8, 8), **run)
        unchanged = sample(unet, schedule, scheduler, [cfg, neutral], text_cond(), (2, 4, 8, 8), **run)
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-4
    assert torch.equal(unchanged, plain)


def test_pag_composes_with_cfg_and_classifier_guidance_in_any_order():
    from guidance.test_pipeline import class_pipeline

    pag = {"type": "pag", "scale": 2.0, "layers": ["down_blocks.1"]}
    cfg, classifier = {"type": "cfg", "scale": 3.0}, {"type": "classifier", "scale": 5.0}
    kwargs = dict(labels=[0, 1], height=8, width=8, seed=3, progress=False)
    runs = [class_pipeline(specs)(**kwargs).latents for specs in ([cfg, classifier, pag], [classifier, cfg, pag],
                                                                   [cfg, pag, classifier], [pag, cfg, classifier])]
    plain = class_pipeline([cfg, classifier])(**kwargs).latents
    for latents in runs:
        assert torch.isfinite(latents).all() and (latents - plain).abs().max() > 1e-4


class ConformanceContext:
    """The guidance conformance suite with a denoiser to patch in the context."""

    def context(self, schedule, batch):
        torch.manual_seed(0)
        return sfumato.GuidanceContext(schedule=schedule, components={"denoiser": sfumato.build("denoiser", UNET)})


class TestPAGConformance(ConformanceContext, GuidanceConformance):
    spec = {"type": "pag", "scale": 3.0, "layers": ["mid"]}


class TestSEGConformance(ConformanceContext, GuidanceConformance):
    spec = {"type": "seg", "scale": 3.0, "blur_sigma": 2.0}


class TestSkipLayerConformance(ConformanceContext, GuidanceConformance):
    spec = {"type": "skip-layer", "scale": 2.8, "layers": ["mid_block"]}
