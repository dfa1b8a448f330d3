"""Conformance suites for components: subclass one in a ``Test*`` class and set its attributes.

::

    from sfumato.testing import DenoiserConformance

    class TestMyUNet(DenoiserConformance):
        spec = {"type": "acme.unet", "channels": 8}
        sample_shape = (3, 16, 16)

Each suite builds the component from ``spec`` through the process-wide registry (or through
``component_class`` when set, so a plugin can be tested before it is installed) and checks the
contract of its kind. The suites never depend on first-party plugins.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from ..component import Component
from ..conditioning import Conditioning
from ..interfaces import GuidanceContext, Predictor
from ..noise_schedule import DiffusionSpec, NoiseSchedule
from ..prediction import Prediction
from ..registry import get_registry
from ..weights import save_component


class ComponentConformance:
    """Checks every component kind shares: its Spec validates, round-trips and forbids typos."""

    kind: ClassVar[str]
    spec: ClassVar[dict[str, Any]]
    #: Build with this class instead of looking ``spec["type"]`` up in the registry.
    component_class: ClassVar[type[Component] | None] = None

    def component_cls(self) -> type[Component]:
        return self.component_class or get_registry().get(self.kind, self.spec["type"])

    def build(self, **overrides: Any) -> Any:
        torch.manual_seed(0)
        component = self.component_cls().from_spec({**self.spec, **overrides})
        if isinstance(component, nn.Module):
            component.eval()
        return component

    def test_kind_and_type(self):
        cls = self.component_cls()
        assert cls.kind == self.kind
        assert cls.type_name() == self.spec["type"]

    def test_spec_round_trips(self):
        spec_cls = self.component_cls().Spec
        spec = spec_cls.model_validate(self.spec)
        assert spec_cls.model_validate_json(spec.model_dump_json()) == spec
        assert spec_cls.model_validate(spec.model_dump()) == spec
        # as a TOML file gives it back (tuples arrive as lists): a strict tuple field fails here
        assert spec_cls.model_validate(spec.model_dump(mode="json")) == spec

    def test_spec_rejects_unknown_fields(self):
        with pytest.raises(ValidationError, match="no_such_field"):
            self.component_cls().Spec.model_validate({**self.spec, "no_such_field": 1})

    def test_spec_fields_are_documented(self):
        spec_cls = self.component_cls().Spec
        undocumented = [n for n, f in spec_cls.model_fields.items() if n != "type" and not f.description]
        assert not undocumented, f"{spec_cls.__qualname__} fields without a description: {undocumented}"

    def test_builds(self):
        component = self.build()
        assert isinstance(component, self.component_cls())
        assert component.spec.type == self.spec["type"]


class ModuleConformance(ComponentConformance):
    """Checks for components that hold weights (``torch.nn.Module``)."""

    def example_output(self, component: Any) -> Tensor:
        """Run the component on a fixed example input and return one tensor (per kind)."""
        raise NotImplementedError

    def test_is_module(self):
        assert isinstance(self.build(), nn.Module)

    def test_deterministic(self):
        component = self.build()
        with torch.no_grad():
            first, second = self.example_output(component), self.example_output(component)
        assert torch.equal(first, second)
        assert torch.isfinite(first).all()

    def test_weights_round_trip_through_safetensors(self, tmp_path):
        component = self.build()
        if "weights" not in type(component.spec).model_fields:
            pytest.fail(f"{type(component.spec).__qualname__} has no `weights` field to load a file")
        with torch.no_grad():
            for p in component.parameters():  # move away from the seeded init so loading matters
                p.add_(torch.randn_like(p) * 0.01)
        path = save_component(component, tmp_path / "weights.safetensors")
        torch.manual_seed(123)
        loaded = self.component_cls().from_spec({**self.spec, "weights": str(path)}).eval()
        with torch.no_grad():
            assert torch.equal(self.example_output(component), self.example_output(loaded))

    def test_runs_in_bfloat16(self):
        component = self.build().to(torch.bfloat16)
        with torch.no_grad():
            out = self.example_output(component)
        assert out.dtype == torch.bfloat16
        assert torch.isfinite(out.float()).all()


class DenoiserConformance(ModuleConformance):
    """:attr sample_shape: ``(C, H, W)`` of one input sample."""

    kind = "denoiser"
    sample_shape: ClassVar[tuple[int, int, int]] = (4, 8, 8)

    def conditioning(self, batch: int, component: Any) -> Conditioning:
        """Override to condition the example (tokens for cross-attention, labels, ...)."""
        return Conditioning()

    def example_output(self, component: Any) -> Tensor:
        dtype = next(component.parameters()).dtype
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, *self.sample_shape, generator=g).to(dtype)
        t = torch.tensor([10.0, 500.5])
        return component(x, t, self.conditioning(2, component).to(dtype=dtype))

    def test_output_shape(self):
        component = self.build()
        with torch.no_grad():
            out = self.example_output(component)
        assert out.shape == (2, component.out_channels, *self.sample_shape[1:])
        assert component.in_channels == self.sample_shape[0]

    def test_batch_items_are_independent(self):
        component = self.build()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, *self.sample_shape, generator=g)
        t = torch.tensor([10.0, 700.0])
        cond = self.conditioning(2, component)
        with torch.no_grad():
            both = component(x, t, cond)
            first = component(x[:1], t[:1], cond.select(slice(0, 1)))
        torch.testing.assert_close(both[:1], first, atol=1e-4, rtol=1e-4)


class AutoencoderConformance(ModuleConformance):
    """:attr image_size: side of the square test images."""

    kind = "autoencoder"
    image_size: ClassVar[int] = 16

    def images(self, dtype: torch.dtype = torch.float32) -> Tensor:
        g = torch.Generator().manual_seed(0)
        return (torch.rand(2, 3, self.image_size, self.image_size, generator=g) * 2 - 1).to(dtype)

    def example_output(self, component: Any) -> Tensor:
        dtype = next(iter(component.parameters()), torch.zeros(())).dtype
        return component.decode(component.encode(self.images(dtype)))

    def test_latent_shape(self):
        component = self.build()
        with torch.no_grad():
            latents = component.encode(self.images())
            decoded = component.decode(latents)
        side = self.image_size // component.downscale
        assert latents.shape == (2, component.latent_channels, side, side)
        assert decoded.shape == (2, 3, self.image_size, self.image_size)


class EncoderConformance(ModuleConformance):
    """:attr inputs: example inputs (a list of strings, or None for random images)."""

    kind = "encoder"
    inputs: ClassVar[list[str] | None] = None
    image_size: ClassVar[int] = 32

    def example_inputs(self, component: Any) -> Any:
        if component.modality == "text":
            return self.inputs or ["a red circle", "two blue squares above a green triangle"]
        g = torch.Generator().manual_seed(0)
        dtype = next(component.parameters()).dtype
        return (torch.rand(2, 3, self.image_size, self.image_size, generator=g) * 2 - 1).to(dtype)

    def example_output(self, component: Any) -> Tensor:
        return component.encode(self.example_inputs(component)).pooled

    def test_output_shapes(self):
        component = self.build()
        with torch.no_grad():
            out = component.encode(self.example_inputs(component))
        assert out.tokens.ndim == 3 and out.tokens.shape[0] == 2
        assert out.pooled.shape == (2, component.embed_dim)


# -- guidance -------------------------------------------------------------------------------


def analytic_predictor(schedule: NoiseSchedule) -> Predictor:
    """A fixed, differentiable stand-in for a trained denoiser: ``eps = tanh(x) * (1 + cond)``,
    where ``cond`` is the mean of the conditioning tokens (0 when there are none)."""

    def predict(x: Tensor, t: Tensor, cond: Conditioning) -> Prediction:
        scale = 1.0
        if cond.tokens is not None:
            scale = 1.0 + cond.tokens.float().mean(dim=(1, 2)).reshape(-1, *([1] * (x.ndim - 1)))
        return schedule.to_prediction(torch.tanh(x) * scale * (1 + t.reshape(-1, 1, 1, 1) / 1000), x, t)

    return predict


class GuidanceConformance(ComponentConformance):
    """:attr neutral: spec fields that make the guidance a no-op (``{"scale": 1.0}`` for CFG,
    ``{"scale": 0.0}`` for gradient guidance); the suite checks it is *exactly* unguided.
    Override ``context`` to provide the components the method needs."""

    kind = "guidance"
    neutral: ClassVar[dict[str, Any]] = {"scale": 0.0}
    sample_shape: ClassVar[tuple[int, int, int]] = (4, 8, 8)

    def context(self, schedule: NoiseSchedule, batch: int) -> GuidanceContext:
        return GuidanceContext(schedule=schedule, components={}, prompts=["a red circle"] * batch,
                               generator=torch.Generator().manual_seed(0))

    def conditioning(self, batch: int) -> Conditioning:
        g = torch.Generator().manual_seed(2)
        return Conditioning(tokens=torch.randn(batch, 3, 4, generator=g) * 0.1,
                            negative=Conditioning(tokens=torch.zeros(batch, 3, 4)))

    def _run(self, spec_overrides: dict[str, Any]) -> tuple[Prediction, Prediction]:
        schedule = NoiseSchedule(DiffusionSpec(betas="linear", beta_start=1e-4, beta_end=0.02))
        base = analytic_predictor(schedule)
        guidance = self.build(**spec_overrides)
        guided = guidance.wrap(base, self.context(schedule, 2))
        x = torch.randn(2, *self.sample_shape, generator=torch.Generator().manual_seed(3))
        t = torch.tensor([400.0, 400.0])
        cond = self.conditioning(2)
        with torch.no_grad():
            return base(x, t, cond), guided(x, t, cond)

    def test_neutral_setting_is_exactly_unguided(self):
        plain, guided = self._run(self.neutral)
        assert torch.equal(plain.x0, guided.x0) and torch.equal(plain.eps, guided.eps)

    def test_guided_prediction_is_finite_and_shaped(self):
        plain, guided = self._run({})
        assert guided.x0.shape == plain.x0.shape and guided.eps.shape == plain.eps.shape
        assert torch.isfinite(guided.x0).all() and torch.isfinite(guided.eps).all()
        assert math.isfinite(float((guided.x0 - plain.x0).abs().max()))
