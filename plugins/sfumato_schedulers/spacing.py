"""The spacing options every first-party scheduler shares, and image-to-image strength.

The spacing options mean the same thing for every scheduler, because each plans with the core's
helpers (``sfumato.spacing``):

- ``spacing`` (``leading``, ``trailing``, ``linspace``) picks ``steps`` of the model's training
  timesteps (``sfumato.spacing.spaced_timesteps``; Lin et al. 2023, Table 2).
- ``sigmas``, for samplers that work in sigma space, selects a sigma schedule, a component of its
  own (``karras``, ``exponential``, ``beta``, ...; see ``sfumato.SigmaSchedule``), or ``default``:
  the sigmas of the spaced timesteps.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

import sfumato

TimestepSpacing = sfumato.spacing.TimestepSpacing
spaced_timesteps = sfumato.spacing.spaced_timesteps

SPACING_DOC = (
    "How the timesteps are spread over the training range (Lin et al. 2023, Table 2): leading "
    "(0, T/N, 2T/N, ... plus steps_offset), trailing (T-1, T-1-T/N, ...: starts at pure noise) or "
    "linspace (evenly from T-1 to 0)."
)


class StepOptions(sfumato.ComponentSpec):
    """The spec fields every first-party scheduler shares: how many steps, and where they fall."""

    steps: int = Field(50, ge=1, description="Number of sampling steps (at most the training timesteps).")
    spacing: TimestepSpacing = Field("leading", description=SPACING_DOC)
    steps_offset: int = Field(
        0, ge=0, description="Added to every 'leading' timestep (Stable Diffusion 1.x configs use 1)."
    )


class SigmaStepOptions(StepOptions):
    """``StepOptions`` plus the sigma spacing of sigma-space samplers (Euler, Heun, DPM-Solver++)."""

    spacing: TimestepSpacing = Field("linspace", description=SPACING_DOC)
    sigmas: sfumato.SigmaScheduleField = Field(
        "default",
        description="Noise levels: default (the sigmas of the spaced timesteps), a sigma schedule's "
        "name (karras, exponential, beta, align-your-steps, ...) or a table with its fields, such "
        "as { type = \"beta\", alpha = 0.6, beta = 0.6 }. A schedule chooses the levels itself and "
        "ignores `spacing`.",
    )


def keep_strength(plan: sfumato.SamplingPlan, strength: float) -> sfumato.SamplingPlan:
    """Keep only the last ``int(N * strength)`` steps of ``plan`` (image-to-image), as diffusers'
    img2img pipelines do; every per-step tensor in ``plan.extra`` is cut the same way."""
    if not 0 < strength <= 1:
        raise sfumato.SpecError(f"strength must be in (0, 1], got {strength}")
    n = len(plan)
    start = n - min(int(n * strength), n)
    if start == n:
        raise sfumato.SpecError(
            f"strength {strength} of {n} steps leaves no step to run; raise the strength or the steps"
        )
    if start == 0:
        return plan
    extra = {name: values[start:] for name, values in (plan.extra or {}).items()}
    return replace(plan, timesteps=plan.timesteps[start:], sigmas=plan.sigmas[start:], extra=extra)
