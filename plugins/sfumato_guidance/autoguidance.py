"""``autoguidance``: guide a denoiser away from a weaker version of itself.

Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"
(https://arxiv.org/abs/2406.02507), eq. 1 with the weak model ``D_1`` in place of the
unconditional one:

    D_w(x; sigma, c) = D_1(x; sigma, c) + w * (D_0(x; sigma, c) - D_1(x; sigma, c))    (D_1.lerp(D_0, w))

``D_0`` is what the guidance listed before gives (the pipeline's denoiser, or its CFG-guided
prediction when ``cfg`` comes first) and ``D_1`` the weak denoiser's prediction on the positive
conditioning: a smaller and/or less trained model of the same task (the paper's XS model at an
earlier checkpoint). ``w = 1`` is exactly unguided and skips the weak model's forward; the paper's
best values are 2 to 3. Alone in ``[[guidance]]`` this is the paper's method and diffusers'
``AutoGuidance`` formula (``uncond + scale (cond - uncond)`` with the weak prediction as ``uncond``).

The weak denoiser is the table ``denoiser`` (any registered denoiser type), or, without it, the
pipeline's ``[denoiser]`` spec with ``weights`` replaced (the same architecture, an earlier
checkpoint). It is built once, on first use, on the pipeline denoiser's device and dtype, and runs
under the pipeline's ``[diffusion]`` formulation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

import sfumato


class AutoGuidance(sfumato.Guidance):
    """Guides the prediction away from a weaker denoiser's (Karras et al. 2024)."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["autoguidance"] = "autoguidance"
        scale: float = Field(2.0, description="w in D_weak + w (D - D_weak); 1 is exactly unguided (no weak forward); "
                             "the paper's best are 2 to 3.")
        weights: sfumato.SpecPath | None = Field(
            None, description="Weights of the weak denoiser, of the pipeline's [denoiser] architecture (an earlier "
            "checkpoint of it). Set this or denoiser.")
        denoiser: Annotated[dict[str, Any] | None, sfumato.ComponentTable("denoiser")] = Field(
            None, description="The weak denoiser's own table ({type = \"unet\", weights = ..., ...}) when its "
            "architecture differs (a smaller model). Set this or weights.")
        start: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of each run's steps before the method starts.")
        stop: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of each run's steps from which it stops.")

        @model_validator(mode="after")
        def _one_weak_model(self):
            if (self.weights is None) == (self.denoiser is None):
                raise ValueError("name the weak denoiser: set weights (the pipeline's [denoiser] architecture) or "
                                 "denoiser (a table of its own), not both")
            if self.start > self.stop:
                raise ValueError(f"start {self.start} is after stop {self.stop}")
            return self

    def __init__(self, spec: Spec):
        self.spec = spec
        self._weak: Any = None  # built on first use: its architecture may be the pipeline's denoiser's

    def weak_denoiser(self, main: sfumato.Denoiser) -> sfumato.Denoiser:
        """The weak denoiser, built once, placed like ``main``."""
        if self._weak is None:
            table = self.spec.denoiser
            if table is None:
                table = {**main.spec.model_dump(mode="json"), "weights": str(self.spec.weights)}
            weak = sfumato.build("denoiser", table)
            parameter = next(main.parameters(), None)
            if parameter is not None:
                weak = weak.to(device=parameter.device, dtype=parameter.dtype)
            self._weak = weak.eval().requires_grad_(False)
        return self._weak

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec = self.spec
        if spec.scale == 1.0:
            return predictor
        main = context.components.get("denoiser")
        if main is None:
            raise sfumato.SpecError("autoguidance needs the pipeline's [denoiser] (to place the weak one beside it)")
        weak = sfumato.bind_predictor(self.weak_denoiser(main), context.schedule)
        step = context.step

        def guided(x: torch.Tensor, t: torch.Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            strong = predictor(x, t, cond)
            if not step.within(spec.start, spec.stop):
                return strong
            return weak(x, t, cond).lerp(strong, spec.scale)

        return guided
