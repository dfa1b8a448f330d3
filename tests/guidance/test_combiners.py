"""The cond/uncond hook: ``[[guidance]] type = "cfg"`` with a ``combiner`` (a component of kind
``combiner``, chosen by name or table). Each first-party combiner equals its diffusers guider
(``diffusers.guiders``) call by call over a run, rescale included; the interval and classifier
guidance (either order) compose with every combiner; a combiner's state lives for one run."""

from __future__ import annotations

import types
from typing import Literal

import pytest
import torch

import sfumato
from guidance.test_pipeline import class_pipeline, text_pipeline
from guidance.toys import NULL_LABEL, sample
from sfumato.testing import fresh_registry

guiders = pytest.importorskip("diffusers.guiders")
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer  # noqa: E402

STEPS = 4
#: sfumato combiner table -> the diffusers guider with the same settings (rescale added per test).
GUIDERS = {
    "cfg": ({"type": "cfg"}, lambda scale, rescale: guiders.ClassifierFreeGuidance(scale, rescale)),
    "apg": ({"type": "apg", "eta": 0.3, "norm_threshold": 2.0, "momentum": -0.5},
            lambda scale, rescale: guiders.AdaptiveProjectedGuidance(
                scale, adaptive_projected_guidance_momentum=-0.5, adaptive_projected_guidance_rescale=2.0, eta=0.3,
                guidance_rescale=rescale)),
    "cfg-zero-star": ({"type": "cfg-zero-star", "zero_init_steps": 1},
                      lambda scale, rescale: guiders.ClassifierFreeZeroStarGuidance(scale, 1, rescale)),
    "tcfg": ({"type": "tcfg"}, lambda scale, rescale: guiders.TangentialClassifierFreeGuidance(scale, rescale)),
}


def text_cond(batch: int = 2) -> sfumato.Conditioning:
    g = torch.Generator().manual_seed(2)
    return sfumato.Conditioning(tokens=torch.randn(batch, 3, 4, generator=g),
                                negative=sfumato.Conditioning(tokens=torch.randn(batch, 3, 4, generator=g) * 0.1))


def raw_network(seed: int = 0):
    """A raw network output that depends on x, t and the conditioning (eps, v or x0 by schedule)."""
    weight = torch.randn(4, 4, 1, 1, generator=torch.Generator().manual_seed(seed))

    def network(x, t, cond):
        gain = 1 + cond.tokens.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return torch.nn.functional.conv2d(torch.tanh(x), weight) * gain + 0.1 * x * (t.reshape(-1, 1, 1, 1) / 1000)

    return network


def run_context(schedule, plan=None):
    step = sfumato.SamplerStep.for_plan(plan) if plan is not None else sfumato.SamplerStep()
    return sfumato.GuidanceContext(schedule=schedule, components={}, plan=plan, step=step)


@pytest.mark.parametrize("rescale", [0.0, 0.7])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("name", list(GUIDERS))
def test_combiner_equals_its_diffusers_guider_over_a_run(name, prediction, rescale):
    schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(prediction=prediction))
    plan = sfumato.build("scheduler", {"type": "euler"}).plan(schedule, STEPS)
    network, scale = raw_network(), 5.0
    table, make_guider = GUIDERS[name]
    context = run_context(schedule, plan)
    guided = sfumato.build("guidance", {"type": "cfg", "scale": scale, "rescale": rescale, "combiner": table}).wrap(
        sfumato.bind_predictor(network, schedule), context)
    guider = make_guider(scale, rescale)
    if name == "apg":
        guider.momentum_buffer = MomentumBuffer(-0.5)  # what its prepare_inputs makes at step 0
    cond, g = text_cond(), torch.Generator().manual_seed(1)
    for i in range(STEPS):
        context.step.enter(i)
        guider.set_state(step=i, num_inference_steps=STEPS, timestep=plan.timesteps[i])
        x, t = torch.randn(2, 4, 8, 8, generator=g), plan.timesteps[i].expand(2)
        expected = guider.forward(network(x, t, cond), network(x, t, cond.negative)).pred
        ours = schedule.to_output(guided(x, t, cond), x, t)
        if name == "cfg-zero-star" and i == 0 and rescale:
            assert torch.isnan(expected).all()  # diffusers rescales the zeroed output by 0 / 0
            torch.testing.assert_close(ours, torch.zeros_like(ours), atol=1e-5, rtol=0)  # ours stays zero
            continue
        torch.testing.assert_close(ours, expected, atol=2e-5, rtol=2e-5)


def test_zero_init_counts_steps_not_calls_with_heun(mixture, schedule):
    """Heun's two calls of step 0 are both zero-initialised; a call outside a run never is."""
    seen = []

    class Probe:
        def wrap(self, predictor, context):
            def probe(x, t, cond):
                prediction = predictor(x, t, cond)
                seen.append((context.step.index, bool((schedule.to_output(prediction, x, t) == 0).all())))
                return prediction
            return probe

    cfg = sfumato.build("guidance", {"type": "cfg", "scale": 3.0, "combiner": {"type": "cfg-zero-star", "zero_init_steps": 1}})
    labels = torch.tensor([0, 1])
    cond = sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, NULL_LABEL)))
    sample(mixture, schedule, "heun", [cfg, Probe()], cond, (2, 3, 8, 8), steps=3)
    assert seen == [(0, True), (0, True), (1, False), (1, False), (2, False)]
    outside = cfg.wrap(sfumato.bind_predictor(mixture, schedule), run_context(schedule))
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 500.0)
    assert (schedule.to_output(outside(x, t, cond), x, t) != 0).any()


@pytest.mark.parametrize("name", ["apg", "cfg-zero-star", "tcfg"])
def test_interval_composes_with_every_combiner(name):
    schedule = sfumato.NoiseSchedule()
    base = sfumato.bind_predictor(raw_network(), schedule)
    table = GUIDERS[name][0]
    limited = sfumato.build("guidance", {"type": "cfg", "scale": 4.0, "interval": [0.3, 0.7], "combiner": table})
    full = sfumato.build("guidance", {"type": "cfg", "scale": 4.0, "combiner": table})
    x, cond = torch.randn(3, 4, 8, 8), text_cond(3)
    t = torch.tensor([900.0, 500.0, 100.0])  # positions 0.10, 0.50, 0.90: only the middle sample is inside
    out = limited.wrap(base, run_context(schedule))(x, t, cond)
    guided = full.wrap(base, run_context(schedule))(x, t, cond)
    torch.testing.assert_close(out.eps[1], guided.eps[1])
    torch.testing.assert_close(out.eps[[0, 2]], base(x, t, cond).eps[[0, 2]])


def test_scale_one_is_the_conditional_pass_whatever_the_combiner(mixture, schedule):
    labels = torch.tensor([0, 1])
    cond = sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, NULL_LABEL)))
    unguided = sample(mixture, schedule, "ddim", [], cond, (2, 3, 8, 8), steps=3)
    for table in (spec for spec, _ in GUIDERS.values()):
        mixture.calls.clear()
        cfg = sfumato.build("guidance", {"type": "cfg", "scale": 1.0, "combiner": table})
        assert torch.equal(sample(mixture, schedule, "ddim", [cfg], cond, (2, 3, 8, 8), steps=3), unguided)
        assert mixture.calls == [2, 2, 2]


@pytest.mark.parametrize("name", ["apg", "cfg-zero-star", "tcfg"])
@pytest.mark.parametrize("order", ["classifier-first", "cfg-first"])
def test_classifier_guidance_composes_in_either_order(name, order):
    cfg = {"type": "cfg", "scale": 3.0, "combiner": GUIDERS[name][0]}
    classifier = {"type": "classifier", "scale": 5.0}
    specs = [classifier, cfg] if order == "classifier-first" else [cfg, classifier]
    kwargs = dict(labels=[0, 1], height=8, width=8, seed=3, progress=False)
    both = class_pipeline(specs)(**kwargs).latents
    alone = class_pipeline([cfg])(**kwargs).latents
    assert torch.isfinite(both).all() and (both - alone).abs().max() > 1e-3
    other_order = class_pipeline(list(reversed(specs)))(**kwargs).latents
    assert not torch.equal(both, other_order)


def test_apg_momentum_lives_for_one_run():
    momentum = {"type": "cfg", "scale": 4.0, "combiner": {"type": "apg", "momentum": -0.5, "norm_threshold": 0.0}}
    kwargs = dict(labels=[0, 1], height=8, width=8, steps=3, seed=4, progress=False)
    pipe = class_pipeline([momentum])
    first, second = pipe(**kwargs).latents, pipe(**kwargs).latents
    assert torch.equal(first, second)
    without = class_pipeline([{**momentum, "combiner": {"type": "apg", "norm_threshold": 0.0}}])(**kwargs).latents
    assert (first - without).abs().max() > 1e-4


def test_combiner_field_takes_a_name_or_a_table_and_keeps_defaults_short():
    by_name = sfumato.build("guidance", {"type": "cfg", "combiner": "apg"})
    by_table = sfumato.build("guidance", {"type": "cfg", "combiner": {"type": "apg"}})
    assert by_name.spec.combiner == by_table.spec.combiner == "apg"
    assert sfumato.build("guidance", {"type": "cfg"}).spec.model_dump()["combiner"] == "cfg"
    custom = sfumato.build("guidance", {"type": "cfg", "combiner": {"type": "apg", "momentum": -0.5}})
    assert custom.spec.model_dump(mode="json")["combiner"] == {"type": "apg", "eta": 0.0, "norm_threshold": 15.0,
                                                               "momentum": -0.5}
    assert custom.combiner.spec.momentum == -0.5


class Doubled(sfumato.Combiner):
    """Plain CFG at twice the scale: a third-party combiner, enough to see that the hook is used."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["acme.doubled"] = "acme.doubled"

    def combine(self, cond, uncond, scale, context):
        return uncond.lerp(cond, 2 * scale)


def test_a_third_party_combiner_plugs_in_through_the_registry():
    plugin = types.ModuleType("acme")
    plugin.SFUMATO_PLUGIN_API = 1
    plugin.register_components = sfumato.hookimpl(lambda register: register(Doubled))
    with fresh_registry(plugin, first_party=True):
        cfg = sfumato.build("guidance", {"type": "cfg", "scale": 3.0, "combiner": "acme.doubled"})
    schedule = sfumato.NoiseSchedule()
    base = sfumato.bind_predictor(raw_network(), schedule)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.full((2,), 400.0), text_cond()
    expected = base(x, t, cond.negative).lerp(base(x, t, cond), 6.0)
    torch.testing.assert_close(cfg.wrap(base, run_context(schedule))(x, t, cond).eps, expected.eps)


class EmptyPromptEncoder:
    """A text encoder whose empty prompt encodes to fixed tokens: what perp-neg asks for."""

    tokens = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(9)) * 0.2

    def encode(self, prompts):
        assert set(prompts) == {""}
        tokens = self.tokens.repeat(len(prompts), 1, 1)
        return sfumato.EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))


def test_perp_neg_removes_the_negatives_part_along_the_positive_in_one_forward():
    schedule, network = sfumato.NoiseSchedule(), raw_network()
    calls = []

    def counted(x, t, cond):
        calls.append(x.shape[0])
        return network(x, t, cond)

    base = sfumato.bind_predictor(counted, schedule)
    context = sfumato.GuidanceContext(schedule=schedule, components={"text_encoder": EmptyPromptEncoder()})
    perp_neg = sfumato.build("guidance", {"type": "cfg", "scale": 4.0, "combiner": {"type": "perp-neg", "neg_scale": 0.8}})
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([300.0, 700.0])
    tokens, negative = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    cond = sfumato.Conditioning(tokens=tokens, pooled=tokens.mean(1),
                                negative=sfumato.Conditioning(tokens=negative, pooled=negative.mean(1)))
    out = perp_neg.wrap(base, context)(x, t, cond)
    assert calls == [6]  # [negative, positive, empty prompt] of two samples, one forward
    empty = sfumato.Conditioning(tokens=EmptyPromptEncoder.tokens.repeat(2, 1, 1), pooled=EmptyPromptEncoder.tokens.mean(1).repeat(2, 1))
    e = network(x, t, empty)
    pos, neg = network(x, t, cond) - e, network(x, t, cond.negative) - e
    along = (neg * pos).sum(dim=(1, 2, 3), keepdim=True) / pos.pow(2).sum(dim=(1, 2, 3), keepdim=True)
    perpendicular = neg - along * pos
    assert (perpendicular * pos).sum(dim=(1, 2, 3)).abs().max() < 1e-3  # perpendicular per sample
    torch.testing.assert_close(out.eps, e + 4.0 * (pos - 0.8 * perpendicular), atol=1e-5, rtol=1e-5)
    same = sfumato.Conditioning(tokens=tokens, pooled=tokens.mean(1), negative=empty)  # negative prompt "" : plain CFG
    plain = sfumato.build("guidance", {"type": "cfg", "scale": 4.0}).wrap(base, context)(x, t, same)
    torch.testing.assert_close(perp_neg.wrap(base, context)(x, t, same).eps, plain.eps, atol=1e-5, rtol=1e-5)


def test_perp_neg_without_a_text_encoder_says_what_it_needs(mixture, schedule):
    cfg = sfumato.build("guidance", {"type": "cfg", "combiner": "perp-neg"})
    with pytest.raises(sfumato.SpecError, match=r"\[\[guidance\]\] cfg combiner 'perp-neg'.*\[text_encoder\]"):
        cfg.wrap(sfumato.bind_predictor(mixture, schedule), run_context(schedule))


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "euler", "euler-ancestral", "heun", "dpmpp-2m"])
@pytest.mark.parametrize("name", ["apg", "cfg-zero-star", "tcfg"])
def test_every_combiner_with_every_scheduler(name, scheduler, mixture, schedule):
    labels = torch.tensor([0, 1])
    cond = sfumato.Conditioning(labels=labels, negative=sfumato.Conditioning(labels=torch.full_like(labels, NULL_LABEL)))
    table = {**GUIDERS[name][0], **({"norm_threshold": 0.5} if name == "apg" else {})}
    plain = sample(mixture, schedule, scheduler, [sfumato.build("guidance", {"type": "cfg", "scale": 3.0})], cond,
                   (2, 3, 8, 8), steps=3, seed=7)
    combined = sample(mixture, schedule, scheduler, [sfumato.build("guidance", {"type": "cfg", "scale": 3.0, "combiner": table})],
                      cond, (2, 3, 8, 8), steps=3, seed=7)
    assert torch.isfinite(combined).all() and (combined - plain).abs().max() > 1e-4


@pytest.mark.parametrize("combiner", ["perp-neg", {"type": "apg", "momentum": -0.5}])
def test_clip_guidance_composes_with_combiners_in_either_order(combiner):
    cfg = {"type": "cfg", "scale": 2.0, "combiner": combiner}
    clip = {"type": "clip", "scale": 500.0, "cutouts": 2}
    kwargs = dict(negative_prompt="a blue square", height=8, width=8, seed=1, progress=False)
    alone = text_pipeline([cfg])("a red circle", **kwargs).latents
    runs = [text_pipeline(specs)("a red circle", **kwargs).latents for specs in ([cfg, clip], [clip, cfg])]
    for latents in runs:
        assert torch.isfinite(latents).all() and (latents - alone).abs().max() > 1e-5
    assert not torch.equal(*runs)
