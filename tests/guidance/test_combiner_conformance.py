"""Every first-party combiner passes the shipped combiner conformance suite
(``sfumato.testing.CombinerConformance``): equal predictions combine to themselves, shapes and
dtypes are kept, runs are deterministic with no state on the combiner, ``combine`` compiles with
no host synchronisation, and rescale and the interval of ``cfg`` apply to it."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

import sfumato
from sfumato.testing import CombinerConformance


class TestCFGCombiner(CombinerConformance):
    spec = {"type": "cfg"}


class TestAPG(CombinerConformance):
    spec = {"type": "apg", "eta": 0.2, "norm_threshold": 2.0, "momentum": -0.5}


class TestCFGZeroStar(CombinerConformance):
    spec = {"type": "cfg-zero-star", "zero_init_steps": 1}


class TestTCFG(CombinerConformance):
    spec = {"type": "tcfg"}


class TestPerpNeg(CombinerConformance):
    spec = {"type": "perp-neg", "neg_scale": 0.8}


# -- the suite fails combiners that break the contract ------------------------------------------

class _Bad(sfumato.Combiner):
    class Spec(sfumato.ComponentSpec):
        type: Literal["test.bad"] = "test.bad"

    def combine(self, cond, uncond, scale, context):
        return uncond.lerp(cond, scale)


class StateOnSelf(_Bad):
    def combine(self, cond, uncond, scale, context):
        self.calls = getattr(self, "calls", 0) + 1  # a run's state kept on the combiner
        return uncond.lerp(cond, scale + 0.1 * self.calls)


class HostSync(_Bad):
    def combine(self, cond, uncond, scale, context):
        if float((cond.eps - uncond.eps).abs().max()) > 10:  # a host synchronisation
            return cond
        return uncond.lerp(cond, scale)


class Offset(_Bad):
    def combine(self, cond, uncond, scale, context):
        return sfumato.Prediction.from_eps(uncond.lerp(cond, scale).eps + 0.01, context.x, cond.alpha_bar)


class Float32(_Bad):
    def combine(self, cond, uncond, scale, context):
        out = uncond.lerp(cond, scale)
        return sfumato.Prediction(x0=out.x0.float(), eps=out.eps.float(), alpha_bar=out.alpha_bar)


@pytest.mark.parametrize("combiner, check, args", [
    (StateOnSelf, "test_runs_are_deterministic_and_keep_no_state_on_the_combiner", ()),
    (HostSync, "test_combine_compiles_without_host_synchronisation", ()),
    (Offset, "test_equal_predictions_give_that_prediction", ("outside a run",)),
    (Float32, "test_output_has_the_inputs_shape_and_dtype", (torch.bfloat16,)),
])
def test_the_suite_fails_a_combiner_that_breaks_the_contract(combiner, check, args):
    suite = type("Suite", (CombinerConformance,), {"spec": {"type": "test.bad"}, "component_class": combiner})()
    getattr(suite, "test_builds")()  # builds and is otherwise fine
    with pytest.raises((AssertionError, torch._dynamo.exc.TorchDynamoException)):  # dynamo: the graph break
        getattr(suite, check)(*args)
