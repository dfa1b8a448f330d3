"""The step caches compute what diffusers' hooks compute (``diffusers.hooks``) on the same DiT:
``first-block-cache`` as ``apply_first_block_cache``, ``taylorseer`` with ``target =
"attention"`` as ``apply_taylorseer_cache`` (float32 factors). diffusers has no DeepCache and no
token merging (``tomesd`` patches diffusers' blocks but is not installed here)."""

from __future__ import annotations

import pytest
import torch

import sfumato
from sfumato_dit import DiT

diffusers = pytest.importorskip("diffusers")
hooks = pytest.importorskip("diffusers.hooks")
from diffusers.hooks.hooks import CacheContext, _set_cache_context  # noqa: E402

CONFIG = dict(sample_size=8, patch_size=2, num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
              out_channels=8, num_embeds_ada_norm=10)
STEPS = 10
#: Largest |sfumato - diffusers| allowed, float32 (the uncached models agree to 0 on the CPU).
TOLERANCE = 1e-5


@pytest.fixture
def models(tmp_path, perturb):
    torch.manual_seed(0)
    reference = perturb(diffusers.DiTTransformer2DModel(**CONFIG))
    reference.save_pretrained(tmp_path)
    return reference, DiT.from_diffusers(tmp_path).eval()


def trajectory():
    """Inputs of a ``STEPS``-step run: a sample drifting slowly, timesteps from 999 down."""
    g = torch.Generator().manual_seed(1)
    x, drift = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for i in range(STEPS):
        yield x + drift * (0.02 * i) ** 1.5, torch.full((2,), 999.0 - 99 * i)


LABELS = torch.tensor([1, 10])


def diffusers_outputs(reference) -> list[torch.Tensor]:
    _set_cache_context(reference, CacheContext("cond"))
    with torch.no_grad():
        return [reference(x, t, class_labels=LABELS).sample[:, :4] for x, t in trajectory()]


def sfumato_outputs(model, table: dict | None) -> list[torch.Tensor]:
    step = sfumato.SamplerStep(count=STEPS)
    context = sfumato.GuidanceContext(schedule=sfumato.NoiseSchedule(), components={"denoiser": model}, step=step)
    predictor = lambda x, t, cond: model(x, t, cond)  # noqa: E731 (the raw output stands for the prediction)
    if table is not None:
        predictor = sfumato.build("speedup", table).wrap(predictor, context)
    outputs = []
    with torch.no_grad():
        for i, (x, t) in enumerate(trajectory()):
            step.enter(i)
            outputs.append(predictor(x, t, sfumato.Conditioning(labels=LABELS)))
    return outputs


def test_first_block_cache_matches_diffusers(models):
    reference, model = models
    hooks.apply_first_block_cache(reference, hooks.FirstBlockCacheConfig(threshold=0.2))
    expected, got = diffusers_outputs(reference), sfumato_outputs(model, {"type": "first-block-cache", "threshold": 0.2})
    plain = sfumato_outputs(model, None)
    for e, g in zip(expected, got):
        assert (g - e).abs().max() < TOLERANCE
    reused = [i for i, (g, p) in enumerate(zip(got, plain)) if not torch.equal(g, p)]
    assert 0 < len(reused) < STEPS - 1, reused  # the threshold both skips and computes on this trajectory


@pytest.mark.parametrize("order", [1, 2])
def test_taylorseer_on_the_attentions_matches_diffusers(models, order):
    reference, model = models
    hooks.apply_taylorseer_cache(reference, hooks.TaylorSeerCacheConfig(
        cache_interval=3, disable_cache_before_step=2, max_order=order, taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"transformer_blocks\.\d+\.attn1"]))  # its default patterns match none of DiT's
    table = {"type": "taylorseer", "target": "attention", "interval": 3, "warmup": 2, "order": order}
    expected, got = diffusers_outputs(reference), sfumato_outputs(model, table)
    plain = sfumato_outputs(model, None)
    for e, g in zip(expected, got):
        assert (g - e).abs().max() < TOLERANCE
    assert sum(not torch.equal(g, p) for g, p in zip(got, plain)) >= 4  # forecasts happened
