"""Speedups on the built-in models: the ``[[speedups]]`` seam, exact when neutral, bounded when
on, refreshing on schedule, reproducible, and no host synchronisation added to the loop."""

from __future__ import annotations

import pytest
import torch

import sfumato
from speed.runs import generate, host_syncs, speedups

#: Each speedup on the model it is for, with its neutral setting (exactly the unsped output).
ON = {
    "deepcache": ("shapes", {"type": "deepcache", "interval": 3}, {"interval": 1}),
    "tome": ("shapes", {"type": "tome", "ratio": 0.5, "max_downsample": 2}, {"ratio": 0.0}),
    "first-block-cache": ("digits_flow", {"type": "first-block-cache", "threshold": 0.2}, {"threshold": 0.0}),
    "taylorseer": ("digits_flow", {"type": "taylorseer", "interval": 3, "warmup": 2}, {"interval": 1}),
    "taylorseer-attention": ("digits_flow", {"type": "taylorseer", "target": "attention", "interval": 3}, {"interval": 1}),
}
#: Largest mean |pixel difference| (images in [-1, 1]) to the unsped images over 8 steps; measured:
#: deepcache 0.06, tome 0.06, first-block-cache 0.02, taylorseer 0.05.
BOUND = 0.15


@pytest.mark.parametrize("name", list(ON))
def test_a_neutral_speedup_changes_nothing_and_an_active_one_changes_a_little(name, request):
    model, table, neutral = ON[name]
    pipe = request.getfixturevalue(model)
    plain = generate(pipe)
    assert torch.equal(generate(pipe, {**table, **neutral}), plain)
    fast = generate(pipe, table)
    difference = (fast - plain).abs().mean().item()
    assert 0.0 < difference < BOUND, difference
    assert torch.equal(generate(pipe, table), fast)  # the same pipeline twice: the same images


def test_speedups_come_from_the_spec_and_are_recorded_in_the_lock(tmp_path, shapes):
    spec = tmp_path / "fast.toml"
    spec.write_text(f'extends = "{sfumato.get_registry().model("shapes").spec_path}"\n\n'
                    '[[speedups]]\ntype = "deepcache"\ninterval = 2\n')
    pipe = sfumato.load_pipeline(str(spec))
    assert [s.type_name() for s in pipe.speedups] == ["deepcache"]
    result = pipe("a red circle", steps=4, seed=3, progress=False)
    assert result.lock["spec"]["speedups"] == [{"type": "deepcache", "interval": 2, "branch": 0, "start": 0.0,
                                                "stop": 1.0}]
    with speedups(shapes, {"type": "deepcache", "interval": 2}):
        expected = shapes("a red circle", steps=4, seed=3, progress=False).decoded
    assert torch.equal(result.decoded, expected)


def test_bad_speedup_tables_are_spec_errors_naming_the_field():
    with pytest.raises(sfumato.SpecError, match=r"\[\[speedups\]\] #1.*(deepcach|valid types)"):
        sfumato.load_pipeline("shapes", overrides={"speedups": [{"type": "deepcach"}]})
    with pytest.raises(sfumato.SpecError, match=r"\[\[speedups\]\] #1 interval"):
        sfumato.load_pipeline("shapes", overrides={"speedups": [{"type": "deepcache", "interval": 0}]})


def test_a_speedup_for_another_architecture_says_what_the_denoiser_lacks(shapes, digits_flow):
    with pytest.raises(sfumato.SpecError, match="deepcache works on deep-branch points.*has none"):
        generate(digits_flow, {"type": "deepcache"})
    with pytest.raises(sfumato.SpecError, match="do(es)? not take the output of.*use deepcache"):
        generate(shapes, {"type": "first-block-cache"})
    with pytest.raises(sfumato.SpecError, match="branch 1 is out of range.*deep.0"):
        generate(shapes, {"type": "deepcache", "branch": 1})


def count_calls(module: torch.nn.Module):
    calls = []
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize(("steps", "table", "refreshes"), [
    (7, {"interval": 3}, 3),  # steps 0, 3, 6
    (8, {"interval": 2}, 4),
    (5, {"interval": 1}, 5),
    (10, {"interval": 3, "start": 0.3}, 3 + 3),  # steps 0-2 in full, then 3, 6, 9
    (10, {"interval": 4, "start": 0.2, "stop": 0.8}, 2 + 1 + 2),  # 0-1, then 4, then 8-9
])
def test_deepcache_runs_the_deep_branch_on_refresh_steps_only(shapes, steps, table, refreshes):
    calls, hook = count_calls(shapes.denoiser.mid_block)
    try:
        generate(shapes, {"type": "deepcache", **table}, steps=steps)
    finally:
        hook.remove()
    assert len(calls) == refreshes  # one forward per step: cfg batches


def test_taylorseer_computes_on_diffusers_schedule(digits_flow):
    calls, hook = count_calls(digits_flow.denoiser.transformer_blocks[0].attn1)
    try:
        generate(digits_flow, {"type": "taylorseer", "interval": 5, "warmup": 3}, steps=10)
    finally:
        hook.remove()
    # steps 0-2 (warm-up), then every step i with (i - 3 - 1) % 5 == 0: 4 and 9
    assert len(calls) == 5


def test_deepcache_keeps_one_entry_per_forward_of_a_two_call_sampler(shapes):
    """Heun calls the model twice per step; the corrector reuses the corrector's deep features."""
    calls, hook = count_calls(shapes.denoiser.mid_block)
    heun = sfumato.build("scheduler", {"type": "heun"})
    before = shapes.components["scheduler"]
    shapes.components["scheduler"] = heun
    try:
        plain = generate(shapes, steps=6)
        calls.clear()
        cached = generate(shapes, {"type": "deepcache", "interval": 3}, steps=6)
    finally:
        shapes.components["scheduler"] = before
        hook.remove()
    assert len(calls) == 4  # steps 0 and 3, two forwards each
    assert (cached - plain).abs().mean().item() < BOUND


@pytest.mark.parametrize("name", ["deepcache", "tome", "taylorseer"])
def test_step_decided_speedups_add_no_host_synchronisation(name, request):
    model, table, _ = ON[name]
    pipe = request.getfixturevalue(model)
    plain = host_syncs(lambda: generate(pipe, steps=6))
    assert host_syncs(lambda: generate(pipe, table, steps=6)) == plain


def test_the_first_block_cache_synchronises_once_per_forward_as_diffusers_does(digits_flow):
    """Its decision reads a tensor value; the documented cost of a data-dependent skip."""
    plain = host_syncs(lambda: generate(digits_flow, steps=6))
    assert host_syncs(lambda: generate(digits_flow, ON["first-block-cache"][1], steps=6)) - plain <= 6


def test_token_merging_combines_with_perturbed_attention_guidance_on_the_same_attentions(shapes):
    """ToMe patches every row of the self-attentions and PAG the perturbed branch's rows: PAG's
    rows attend by the identity, the others over merged tokens, in the same forward."""
    pag = [{"type": "cfg", "scale": 5.0}, {"type": "pag", "layers": ["mid"]}]
    pipe = sfumato.load_pipeline("shapes", overrides={"guidance": pag})
    plain = generate(pipe, steps=4)
    merged = generate(pipe, {"type": "tome", "max_downsample": 2}, steps=4)
    assert 0.0 < (merged - plain).abs().mean().item() < BOUND
