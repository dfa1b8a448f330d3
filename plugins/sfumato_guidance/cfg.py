"""``cfg``: classifier-free guidance, with a choice of combiner, guidance rescale and a guidance
interval.

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (https://arxiv.org/abs/2207.12598):

    pred = uncond + scale * (cond - uncond)        (uncond.lerp(cond, scale))

on x0 and eps at once (every parameterisation is affine in the network output with the same
coefficients, so this equals guiding the raw output). The conditional and unconditional passes
run as ONE forward on a batch ``[negative, positive]``; ``scale = 1`` is exactly the
conditional prediction and costs no extra pass.

The combination itself is a component (``combiner``, ``sfumato.Combiner``): the formula above is
the default ``cfg``; ``apg``, ``cfg-zero-star``, ``tcfg`` and third-party combiners replace it,
and rescale and the interval apply to whatever the combiner returns.

Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", https://arxiv.org/abs/2305.08891, sec. 3.4), applied as diffusers'
``rescale_noise_cfg`` does, on the model's raw parameterisation ``r`` (eps for epsilon models,
v for v-prediction, x0 for sample models; derived from the ``Prediction``):

    r_rescaled = r_cfg * std(r_cond) / std(r_cfg)              (std per sample, over C, H, W)
    r          = phi * r_rescaled + (1 - phi) * r_cfg

Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves
Sample and Distribution Quality in Diffusion Models", https://arxiv.org/abs/2404.07724): guidance
is applied only while the trajectory position ``1 - t / (T - 1)`` (0 at the noisiest training
timestep, 1 at t = 0; ``T`` the training timesteps) lies in ``[start, end]``; outside it the
unguided conditional prediction is returned (one pass on the positive conditioning). The paper
states the interval in sigma; a timestep fraction reads the same for every schedule and sampler.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

import sfumato

from .combiners import sample_dims


def rescale_guided(
    guided: sfumato.Prediction, positive: sfumato.Prediction, phi: float, x: Tensor, t: Tensor,
    schedule: sfumato.Formulation,
) -> sfumato.Prediction:
    """Guidance rescale (Lin et al. 2023, eq. 15-16) on the model's raw output (eps, v, velocity,
    EDM's F: whatever its formulation's network predicts, ``Formulation.to_output``)."""
    raw_guided, raw_positive = schedule.to_output(guided, x, t), schedule.to_output(positive, x, t)
    dims = sample_dims(raw_guided)
    std_positive = raw_positive.std(dim=dims, keepdim=True)
    std_guided = raw_guided.std(dim=dims, keepdim=True)
    # An output with no spread of its own (CFG-Zero*'s zeroed steps: zero up to the rounding of the
    # conversion to the raw output) stays as it is, rather than its rounding noise blown up to the
    # conditional output's spread (diffusers divides 0 by 0 there).
    flat = std_guided <= 1e-6 * std_positive
    rescaled = raw_guided * torch.where(flat, 1.0, std_positive / std_guided)
    return schedule.to_prediction(phi * rescaled + (1 - phi) * raw_guided, x, t)


class ClassifierFreeGuidance(sfumato.Guidance):
    """Classifier-free guidance in one batched forward, with a combiner, rescale and an interval."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["cfg"] = "cfg"
        scale: float = Field(
            7.5, description="Guidance scale w in uncond + w * (cond - uncond); 1 is exactly unguided, "
            "0 is the unconditional (negative-prompt) prediction.",
        )
        rescale: float = Field(
            0.0, ge=0.0, le=1.0, description="Guidance rescale phi (Lin et al. 2023): 0 is plain CFG, "
            "0.7 is the paper's choice; matches the guided output's std to the conditional one's.",
        )
        interval: tuple[float, float] = Field(
            (0.0, 1.0), strict=False, description="[start, end] fractions of the trajectory, measured as 1 - t / (T - 1) "
            "(0 = noisiest training timestep, 1 = t 0), where guidance applies (Kynkäänniemi et al. 2024); "
            "outside it the conditional prediction is used.",
        )

        combiner: sfumato.CombinerField = Field(
            "cfg", description="How the conditional and unconditional predictions combine: a registered combiner "
            "('cfg': uncond + scale * (cond - uncond); 'apg', 'cfg-zero-star', 'tcfg') or a table with its fields, "
            "such as { type = \"apg\", momentum = -0.5 }.",
        )

        @model_validator(mode="after")
        def _ordered_interval(self):
            start, end = self.interval
            if not 0.0 <= start <= end <= 1.0:
                raise ValueError(f"interval must satisfy 0 <= start <= end <= 1, got [{start}, {end}]")
            return self

    def __init__(self, spec: Spec):
        self.spec = spec
        self.combiner = sfumato.COMBINER.build(spec.combiner)

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        spec, schedule, combiner = self.spec, context.schedule, self.combiner
        limited = tuple(spec.interval) != (0.0, 1.0)
        state: dict = {}  # the combiner's state for this run
        own = combiner.branches(context)  # the combiner's extra predictions, this run's
        declared = context.open_batch()  # those of guidance wrapped after this one

        def conditional(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            """The unguided prediction, with the declared branches that are active in the same forward."""
            active = [branch for branch in declared if branch.active]
            return sfumato.branches.evaluate(predictor, x, t, cond, active, negative=False)[1]

        def guided(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> sfumato.Prediction:
            if spec.scale == 1.0:
                return conditional(x, t, cond)
            if cond.negative is None:
                raise ValueError(
                    "cfg needs a negative (unconditional) conditioning: give the pipeline a prompt or "
                    "labels of a class-conditional denoiser with a null class, or remove [[guidance]] cfg"
                )
            inside = None
            if limited:  # one host synchronisation per call, only when an interval is set
                position = 1 - t.float() / (schedule.num_timesteps - 1)
                inside = (position >= spec.interval[0]) & (position <= spec.interval[1])  # (B,)
                if not bool(inside.any()):
                    return conditional(x, t, cond)
            active = [branch for branch in declared if branch.active]
            uncond, positive = sfumato.branches.evaluate(predictor, x, t, cond, own + active)
            out = combiner.combine(positive, uncond, spec.scale, sfumato.CombineContext(
                x, t, context, state, [branch.prediction for branch in own]))
            if spec.rescale > 0:
                out = rescale_guided(out, positive, spec.rescale, x, t, schedule)
            if inside is not None and not bool(inside.all()):
                keep = inside.reshape(-1, *([1] * (x.ndim - 1)))
                out = sfumato.Prediction(
                    x0=torch.where(keep, out.x0, positive.x0), eps=torch.where(keep, out.eps, positive.eps),
                    alpha_bar=out.alpha_bar,
                )
            return out

        return guided
