"""The conformance suite for combiners (``sfumato.Combiner``): subclass it in a ``Test*`` class
and set ``spec``.

::

    from sfumato.testing import CombinerConformance

    class TestMyCombiner(CombinerConformance):
        spec = {"type": "acme.cfg-star", "weight": 0.5}
        component_class = MyCombiner     # optional: test it before it is registered

The suite checks the contract in ``sfumato.Combiner`` on predictions of a fixed analytic model
(each row a different conditioning, so conditional, unconditional and branch predictions differ),
for epsilon and v models (``predictions``), computing the combiner's branches
(``Combiner.branches``) as classifier-free guidance does (``sfumato.branches.evaluate``):

- equal conditional, unconditional and branch predictions combine to that prediction, at any
  scale (guiding between two equal predictions changes nothing), outside a run and at a run's
  last step (a method may do something else at a run's start: CFG-Zero*'s zeroed steps);
- the output has the inputs' shapes and dtype (float32 and bfloat16) and is finite;
- a whole run is deterministic: the same combiner object gives the same outputs run after run,
  equal to a freshly built one's (state lives in ``CombineContext.state``, never on the combiner);
- ``combine`` compiles with ``torch.compile(fullgraph=True)`` inside a run and matches eager: no
  host synchronisation (``.item()``, ``bool(tensor)``, a Python branch on a tensor), so a compiled
  guided predictor never waits for the device;
- with the process-wide registry's ``cfg`` guidance (when it is installed and the combiner is
  registered), rescale and the guidance interval apply to it: finite, and outside the interval the
  conditional prediction itself.

The stand-in text encoder (``TokenEncoder``, in ``components``) serves combiners whose branches
encode prompts (``GuidanceContext.encode``: perp-neg's empty prompt); override ``components`` to
give the run context what else the combiner reads.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from ..branches import evaluate
from ..combiner import CombineContext
from ..conditioning import Conditioning
from ..interfaces import EncoderOutput, GuidanceContext, SamplerStep, SamplingPlan
from ..noise_schedule import DiffusionSpec, NoiseSchedule
from ..prediction import Prediction
from ..registry import get_registry
from .conformance import ComponentConformance


class TokenEncoder:
    """A stand-in text encoder: each prompt's tokens ``[3, 4]`` are fixed by its text (the empty
    prompt's are small and nonzero), pooled = their mean."""

    def encode(self, prompts: list[str]) -> EncoderOutput:
        rows = []
        for prompt in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, prompt)) + 1)
            rows.append(torch.randn(3, 4, generator=g) * 0.3)
        tokens = torch.stack(rows)
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))


def token_model(schedule: NoiseSchedule):
    """``(x, t, cond) -> Prediction``: a fixed nonlinear model whose output depends on the
    conditioning tokens per row, in direction as well as in scale."""
    weights = torch.randn(4, 4, generator=torch.Generator().manual_seed(5))

    def predict(x: Tensor, t: Tensor, cond: Conditioning) -> Prediction:
        tokens = cond.tokens.float()
        mix = tokens.mean(dim=1) @ weights  # (B, 4)
        shift = mix[:, :, None, None] if x.shape[1] == 4 else mix.mean(dim=1).reshape(-1, 1, 1, 1)
        shift = shift.to(x.dtype)
        raw = torch.tanh(x * (1 + tokens.mean(dim=(1, 2))).reshape(-1, 1, 1, 1).to(x.dtype) + shift)
        raw = raw * (1 + t.reshape(-1, 1, 1, 1).to(x.dtype) / 1000)
        return schedule.to_prediction(raw, x, t)

    return predict


class CombinerConformance(ComponentConformance):
    """:attr spec: the combiner's spec dict (with ``type``).
    :attr scale: the guidance scale of the checks (never 1: ``combine`` is not called at 1).
    :attr predictions: the ``[diffusion] prediction`` types the checks run on.
    :attr steps: steps of the hand-run sampling runs. :attr sample_shape: ``(B, C, H, W)``.
    :attr compile_backend: the ``torch.compile`` backend of the host-synchronisation check.
    :attr tolerance: absolute tolerance of the equal-predictions and compile checks (float32).
    """

    kind = "combiner"
    scale: ClassVar[float] = 5.0
    predictions: ClassVar[tuple[str, ...]] = ("epsilon", "v")
    steps: ClassVar[int] = 4
    sample_shape: ClassVar[tuple[int, int, int, int]] = (2, 4, 8, 8)
    compile_backend: ClassVar[str] = "aot_eager"
    tolerance: ClassVar[float] = 1e-4

    # -- what the checks run on -------------------------------------------------------------------

    def components(self) -> dict[str, Any]:
        """The run context's components: a stand-in ``text_encoder`` (``TokenEncoder``)."""
        return {"text_encoder": TokenEncoder()}

    def schedule(self, prediction: str = "epsilon") -> NoiseSchedule:
        return NoiseSchedule(DiffusionSpec(betas="linear", beta_start=1e-4, beta_end=0.02, prediction=prediction))

    def plan(self, schedule: NoiseSchedule) -> SamplingPlan:
        """A plan of ``steps`` evenly spaced timesteps, noisiest first (no scheduler needed)."""
        timesteps = torch.linspace(schedule.num_timesteps - 1, 0, self.steps)
        abar = schedule.alphas_cumprod[timesteps.long()]
        sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1)])
        return SamplingPlan(timesteps=timesteps, sigmas=sigmas, init_noise_sigma=1.0, schedule=schedule)

    def run_context(self, schedule: NoiseSchedule, plan: SamplingPlan | None = None) -> GuidanceContext:
        step = SamplerStep.for_plan(plan) if plan is not None else SamplerStep()
        return GuidanceContext(schedule=schedule, components=self.components(),
                               prompts=["a red circle"] * self.sample_shape[0],
                               generator=torch.Generator().manual_seed(0), plan=plan, step=step)

    def conditioning(self) -> Conditioning:
        encoder = TokenEncoder()
        batch = self.sample_shape[0]
        positive = encoder.encode([f"positive {i}" for i in range(batch)])
        negative = encoder.encode([f"negative {i}" for i in range(batch)])
        return Conditioning(tokens=positive.tokens, pooled=positive.pooled,
                            negative=Conditioning(tokens=negative.tokens, pooled=negative.pooled))

    def sample(self, seed: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*self.sample_shape, generator=g).to(dtype)
        t = torch.randint(50, 950, (self.sample_shape[0],), generator=g).float()
        return x, t

    def predictions_of(self, combiner: Any, run: GuidanceContext, x: Tensor, t: Tensor, branches: list[Any],
                       cond: Conditioning | None = None) -> tuple[Prediction, Prediction, list[Prediction]]:
        """``(cond, uncond, branch predictions)`` of one call, in one forward as ``cfg`` computes them."""
        model = token_model(run.schedule)
        uncond, positive = evaluate(model, x, t, self.conditioning() if cond is None else cond, branches)
        return positive, uncond, [branch.prediction for branch in branches]

    def combine_run(self, combiner: Any, prediction: str = "epsilon") -> list[Tensor]:
        """The combiner's outputs (eps) over one hand-run sampling run of ``steps`` steps, with
        fresh state, as the ``cfg`` guidance calls it: one call per step, at its index."""
        schedule = self.schedule(prediction)
        plan = self.plan(schedule)
        run = self.run_context(schedule, plan)
        branches, state, outs = combiner.branches(run), {}, []
        for i in range(self.steps):
            run.step.enter(i)
            x, _ = self.sample(10 + i)
            t = plan.timesteps[i].expand(x.shape[0])
            cond, uncond, extra = self.predictions_of(combiner, run, x, t, branches)
            outs.append(combiner.combine(cond, uncond, self.scale, CombineContext(x, t, run, state, extra)).eps)
        return outs

    # -- the checks -------------------------------------------------------------------------------

    def test_scale_is_not_one(self):
        assert self.scale != 1.0, "combine is never called at scale 1: choose another scale for the checks"

    @pytest.mark.parametrize("where", ["outside a run", "at a run's last step"])
    def test_equal_predictions_give_that_prediction(self, where):
        for prediction in self.predictions:
            schedule = self.schedule(prediction)
            plan = self.plan(schedule) if where != "outside a run" else None
            run = self.run_context(schedule, plan)
            if plan is not None:
                run.step.enter(self.steps - 1)
            combiner = self.build()
            branches = combiner.branches(run)
            x, t = self.sample(1)
            cond, _, _ = self.predictions_of(combiner, run, x, t, branches)
            out = combiner.combine(cond, cond, self.scale, CombineContext(x, t, run, {}, [cond] * len(branches)))
            for name in ("x0", "eps"):
                torch.testing.assert_close(
                    getattr(out, name), getattr(cond, name), atol=self.tolerance, rtol=self.tolerance,
                    msg=lambda m: f"{prediction} model, {where}: {name} of combine(p, p) is not p\n{m}")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
    def test_output_has_the_inputs_shape_and_dtype(self, dtype):
        schedule = self.schedule()
        run = self.run_context(schedule)
        combiner = self.build()
        branches = combiner.branches(run)
        x, t = self.sample(2, dtype)
        cond = self.conditioning().to(dtype=dtype)
        positive, uncond, extra = self.predictions_of(combiner, run, x, t, branches, cond)
        out = combiner.combine(positive, uncond, self.scale, CombineContext(x, t, run, {}, extra))
        assert isinstance(out, Prediction)
        for name in ("x0", "eps"):
            value = getattr(out, name)
            assert value.shape == x.shape and value.dtype == dtype, f"{name}: {tuple(value.shape)} {value.dtype}"
            assert torch.isfinite(value).all(), f"{name} is not finite"
        guided_away = (out.eps.float() - positive.eps.float()).abs().max()
        assert guided_away > 0, "combine returned the conditional prediction itself: it guides nothing"

    def test_runs_are_deterministic_and_keep_no_state_on_the_combiner(self):
        combiner = self.build()
        first, second = self.combine_run(combiner), self.combine_run(combiner)
        fresh = self.combine_run(self.build())
        for i, (a, b, c) in enumerate(zip(first, second, fresh)):
            assert torch.equal(a, b), f"step {i}: a second run of the same combiner differs (state kept across runs?)"
            assert torch.equal(a, c), f"step {i}: a used combiner differs from a fresh one (state on the combiner?)"

    def test_combine_compiles_without_host_synchronisation(self):
        torch._dynamo.reset()
        schedule = self.schedule()
        plan = self.plan(schedule)
        run = self.run_context(schedule, plan)
        combiner = self.build()
        branches = combiner.branches(run)
        run.step.enter(self.steps - 1)
        x, t = self.sample(3)
        cond, uncond, extra = self.predictions_of(combiner, run, x, t, branches)

        def combine(x: Tensor, t: Tensor, c_eps: Tensor, u_eps: Tensor, *b_eps: Tensor) -> Tensor:
            as_prediction = lambda eps: Prediction.from_eps(eps, x, cond.alpha_bar)  # noqa: E731
            state: dict[str, Any] = {}
            context = CombineContext(x, t, run, state, [as_prediction(e) for e in b_eps])
            return combiner.combine(as_prediction(c_eps), as_prediction(u_eps), self.scale, context).eps

        inputs = (x, t, cond.eps, uncond.eps, *[p.eps for p in extra])
        eager = combine(*inputs)
        compiled = torch.compile(combine, fullgraph=True, backend=self.compile_backend)
        torch.testing.assert_close(compiled(*inputs), eager, atol=self.tolerance, rtol=self.tolerance)

    @pytest.mark.parametrize("prediction", ["epsilon", "v"])
    def test_rescale_and_interval_apply_to_it(self, prediction):
        registry = get_registry()
        try:
            cfg = registry.get("guidance", "cfg")
            registry.get("combiner", self.spec["type"])
        except Exception:  # noqa: BLE001 - the first-party cfg guidance or this combiner is not registered
            pytest.skip("needs the registry's cfg guidance and this combiner registered")
        schedule = self.schedule(prediction)
        x, _ = self.sample(4)
        t = torch.tensor([900.0] + [100.0] * (x.shape[0] - 1))  # the first row outside the interval
        model = token_model(schedule)
        cond = self.conditioning()
        guidance = cfg.from_spec({"type": "cfg", "scale": self.scale, "rescale": 0.7, "interval": [0.5, 1.0],
                                  "combiner": self.spec})
        guided = guidance.wrap(model, self.run_context(schedule))
        out, positive = guided(x, t, cond), model(x, t, cond)
        assert torch.isfinite(out.eps).all() and torch.isfinite(out.x0).all()
        assert torch.equal(out.eps[0], positive.eps[0]), "outside the interval the conditional prediction is returned"
        assert (out.eps[1:] - positive.eps[1:]).abs().max() > 0, "inside the interval the combiner guides"
