"""The U-Net's deep-branch points (DeepCache's seam) and token merging at its first level: a
3-level, SD-like U-Net with self-attention at full resolution, on random weights."""

from __future__ import annotations

import pytest
import torch

import sfumato
from sfumato_speed.tome import bipartite_soft_matching_2d
from sfumato_unet import UNet

SD_LIKE = {"type": "unet", "block_out_channels": [16, 32, 32], "attention": [True, True, False], "norm_num_groups": 8,
           "in_channels": 4, "out_channels": 4, "attention_heads": 2, "attention_head_dim": None,
           "cross_attention_dim": 12}
TOKENS = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet.from_spec(SD_LIKE).eval()


def test_the_unet_advertises_a_deep_branch_below_each_level_and_no_new_weights(unet):
    points = unet.perturbation_points()
    assert [name for name, kind in points.items() if kind == sfumato.model_patches.DEEP_BRANCH] == ["deep.0", "deep.1"]
    assert not [key for key in unet.state_dict() if key.startswith("deep.")]


def test_a_deep_branch_patch_replaces_everything_below_its_level(unet):
    """Skipping deep.0 on rows 2-3 gives those rows what the level-0 blocks make of the stored
    branch output alone; the other rows are untouched."""
    x = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t, cond = torch.full((4,), 500.0), sfumato.Conditioning(tokens=TOKENS.repeat(2, 1, 1))
    seen = []

    def stored(forward, h, *args):
        out = forward(h, *args)
        seen.append(out.shape)
        return torch.zeros_like(out)

    with torch.no_grad():
        plain = unet(x, t, cond)
        with unet.patched({"deep.0": [sfumato.PointPatch(stored, slice(2, 4))]}):
            patched = unet(x, t, cond)
    assert seen == [torch.Size([2, 32, 16, 16])]  # (rows, C_1, level-0 size): what enters up block 2
    assert torch.allclose(patched[:2], plain[:2], atol=1e-5)  # run apart from the other rows: rounding only
    assert (patched[2:] - plain[2:]).abs().mean() > 1e-3


def run(unet, table: dict | None, steps: int = 6) -> torch.Tensor:
    """A toy run: ``steps`` forwards of a drifting sample, one per step, through the speedup."""
    step = sfumato.SamplerStep(count=steps)
    context = sfumato.GuidanceContext(schedule=sfumato.NoiseSchedule(), components={"denoiser": unet}, step=step,
                                      generator=torch.Generator().manual_seed(5))
    predictor = lambda x, t, cond: unet(x, t, cond)  # noqa: E731
    if table is not None:
        predictor = sfumato.build("speedup", table).wrap(predictor, context)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    outputs = []
    with torch.no_grad():
        for i in range(steps):
            step.enter(i)
            outputs.append(predictor(x * (1 - 0.05 * i), torch.full((2,), 900.0 - 100 * i),
                                     sfumato.Conditioning(tokens=TOKENS)))
    return torch.stack(outputs)


@pytest.mark.parametrize("branch", [0, 1])
def test_deepcache_reuses_either_branch_between_refreshes(unet, branch):
    plain, cached = run(unet, None), run(unet, {"type": "deepcache", "interval": 3, "branch": branch})
    same = [torch.equal(c, p) for c, p in zip(cached, plain)]
    assert same == [True, False, False, True, False, False]  # refreshes at steps 0 and 3
    assert (cached - plain).abs().mean() < 0.5 * plain.abs().mean()


def test_tome_merges_at_the_first_level_only_by_default_and_is_seeded(unet):
    plain = run(unet, None)
    merged = run(unet, {"type": "tome", "ratio": 0.5})
    assert not torch.equal(merged, plain) and (merged - plain).abs().mean() < 0.5 * plain.abs().mean()
    assert torch.equal(run(unet, {"type": "tome", "ratio": 0.5}), merged)  # seeded from the run's generator
    assert not torch.equal(run(unet, {"type": "tome", "ratio": 0.5, "random": False}), merged)
    # attention at level 1 only (max_downsample 1 skips it): the level-0 attention is selected away
    assert torch.equal(run(unet, {"type": "tome", "ratio": 0.5, "layers": "down_blocks.1"}), plain)


def test_bipartite_matching_merges_r_tokens_and_unmerges_duplicates_exactly():
    """Tokens repeated within each 2x2 cell: every source merges into its own cell's destination
    (cosine 1), so merging r of them loses nothing and unmerging restores every token."""
    cells = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(3))  # (B, 4x4 cells, C)
    tokens = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(2, 64, 6)  # (B, 8x8, C)
    for generator in (None, torch.Generator().manual_seed(0)):
        merge, unmerge = bipartite_soft_matching_2d(tokens, 8, 8, 2, 2, r=40, generator=generator)
        merged = merge(tokens)
        assert merged.shape == (2, 64 - 40, 6)
        assert torch.allclose(unmerge(merged), tokens, atol=1e-6)


def test_bipartite_matching_handles_maps_that_do_not_divide_into_cells():
    tokens = torch.randn(1, 7 * 5, 4, generator=torch.Generator().manual_seed(4))
    merge, unmerge = bipartite_soft_matching_2d(tokens, 7, 5, 2, 2, r=10, generator=None)
    assert merge(tokens).shape == (1, 25, 4) and unmerge(merge(tokens)).shape == (1, 35, 4)


def test_outside_a_sampling_run_deepcache_computes_every_call(unet):
    """A predictor called without ``run_sampler`` (step count 0) has no steps to cache across."""
    context = sfumato.GuidanceContext(schedule=sfumato.NoiseSchedule(), components={"denoiser": unet})
    cached = sfumato.build("speedup", {"type": "deepcache", "interval": 3}).wrap(lambda x, t, c: unet(x, t, c), context)
    cond = sfumato.Conditioning(tokens=TOKENS)
    with torch.no_grad():
        for side in (16, 8):
            x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(side))
            assert torch.equal(cached(x, torch.full((2,), 500.0), cond), unet(x, torch.full((2,), 500.0), cond))
