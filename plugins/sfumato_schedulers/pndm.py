"""PNDM and PLMS, pseudo numerical methods for diffusion models (Liu et al. 2022,
https://arxiv.org/abs/2202.09778): diffusers' ``PNDMScheduler``, Stable Diffusion's original
sampler (with ``skip_prk_steps``: PLMS, the WebUI's "PLMS").

Each step moves the variance-preserving sample from timestep ``t`` to the next planned timestep
``s`` (to clean after the last) with the "transfer" of Eq. 9 (DDIM's deterministic step written
with eps; ``a = alpha_bar``):

    x_s = sqrt(a_s / a_t) x_t - (a_s - a_t) / (a_t sqrt(1 - a_s) + sqrt(a_t (1 - a_t) a_s)) e

where ``e`` combines the model's eps of the last steps as the linear multistep (Adams-Bashforth)
formula of the available history: ``e_0``; ``(3 e_0 - e_1) / 2``;
``(23 e_0 - 16 e_1 + 5 e_2) / 12``; ``(55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24``. The method warms up
over its first three steps:

- PNDM (``skip_prk_steps = false``, diffusers' default): pseudo Runge-Kutta steps, four model
  calls each (at ``t``, twice at the midpoint ``t - (t - s) // 2`` and at ``s``), combined as RK4 combines
  them; their first eps starts the history. The last step is always a PLMS step.
- PLMS (``skip_prk_steps = true``, Stable Diffusion 1.x's config): the first step is a
  second-order pseudo improved Euler step, two model calls (at ``t`` and, after a first-order
  transfer, at ``s``) averaged; later steps take one call each.

diffusers steps to ``t - T // N`` (DDIM's rule): the next planned timestep with ``leading`` spacing
(Stable Diffusion's) and with ``trailing`` when ``N`` divides ``T``, where the two agree. With other
spacings diffusers' sample drifts off the levels its model is told (more with every step: 0.11 at
64 trailing steps on the conformance check's Gaussian data, growing); sfumato's stays on them.

The last step transfers with the model's own eps (``lower_order_final``; to ``alpha_bar = 1`` that
is its x0), as DPM-Solver's last step does: diffusers applies the four-term combination there too,
an extrapolation over the widest step in sigma that stops the error from shrinking as steps grow.
The Adams-Bashforth weights assume steps of equal length, which holds in timestep index but not in
the noise level the transfer integrates over, so the method is second order (measured on Gaussian
data: errors fall 4x per doubling of the steps), not fourth.

The transfer divides by ``a_t``, so a plan may not start at ``alpha_bar = 0`` (the last timestep
of flow-matching and zero-terminal-SNR models, which ``trailing`` and ``linspace`` spacings
start at): an eps extrapolated from other points says nothing about x0 there.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

import sfumato

from .multistep import history, remember
from .spacing import StepOptions, keep_strength, spaced_timesteps
from .variance_preserving import variance_preserving_plan

#: How a step combines the eps it has, the newest first: the Adams-Bashforth weights of the last 1,
#: 2, 3 and 4 steps' eps, the pseudo improved Euler step's average of its two, and the pseudo
#: Runge-Kutta step's RK4 weights of its four stages.
EPS_WEIGHTS = ((1.0, 0.0, 0.0, 0.0), (3 / 2, -1 / 2, 0.0, 0.0), (23 / 12, -16 / 12, 5 / 12, 0.0),
               (55 / 24, -59 / 24, 37 / 24, -9 / 24), (1 / 2, 1 / 2, 0.0, 0.0), (1 / 6, 1 / 3, 1 / 3, 1 / 6))
IMPROVED_EULER, RUNGE_KUTTA = 4, 5


class PNDM(sfumato.Scheduler):
    """Linear multistep on eps (up to four of them) with a pseudo Runge-Kutta (PNDM) or pseudo
    improved Euler (PLMS) warm-up; second order, deterministic; four (PNDM) or two (PLMS) model
    calls at the first step, one later."""

    class Spec(StepOptions):
        type: Literal["pndm"] = "pndm"
        skip_prk_steps: bool = Field(
            False, description="Warm up with one pseudo improved Euler step (PLMS, two model calls; Stable "
            "Diffusion 1.x's setting) instead of three pseudo Runge-Kutta steps (PNDM, four calls each).",
        )
        lower_order_final: bool = Field(
            True, description="The last step transfers with the model's own eps (to alpha_bar = 1: its x0) instead "
            "of the multistep combination, which diffusers uses and which stops converging as the steps grow.",
        )
        set_alpha_to_one: bool = Field(
            True, description="The last step lands on alpha_bar = 1 (clean); false uses alpha_bar[0] (diffusers' "
            "PNDMScheduler default and Stable Diffusion 1.x's setting), where a run from timestep 0 ends with a "
            "step that does nothing.",
        )

    order = 2  # see the module docstring

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.model_calls_per_step = 2 if spec.skip_prk_steps else 4

    def plan(self, schedule, steps=None, strength=1.0):
        steps = steps or self.spec.steps
        timesteps = spaced_timesteps(schedule.num_timesteps, steps, self.spec.spacing, self.spec.steps_offset).round()
        if not float(schedule.alphas_cumprod[int(timesteps[0])]) > 0:
            raise sfumato.SpecError(
                f"[scheduler] type = 'pndm' cannot start at timestep {int(timesteps[0])}, where this model's "
                "alpha_bar is 0 (pure noise: a flow-matching or zero-terminal-SNR schedule); its multistep "
                "eps says nothing of x0 there. Use spacing = 'leading', or another sampler (ddim, euler, ...)"
            )
        previous = np.append(timesteps[1:], -1)  # each step lands on the next planned timestep; the last is clean
        mid = timesteps - (timesteps - previous) // 2  # the pseudo Runge-Kutta midpoint
        final = 1.0 if self.spec.set_alpha_to_one else float(schedule.alphas_cumprod[0])
        plan = variance_preserving_plan(schedule, timesteps, previous, final)
        a_t, a_s = plan.extra["alpha_bar"], plan.extra["alpha_bar_prev"]
        a_mid = schedule.alphas_cumprod[torch.from_numpy(mid).long()]
        transfer_x, transfer_eps = transfer_coefficients(a_t, a_s)
        mid_x, mid_eps = transfer_coefficients(a_t, a_mid)
        plan.extra.update(  # the transfers to s and to the midpoint, and where the model is called there
            transfer_x=transfer_x, transfer_eps=transfer_eps, mid_x=mid_x, mid_eps=mid_eps,
            eps_weights=transfer_eps[:, None, None] * torch.tensor(EPS_WEIGHTS),  # (N, 6, 4)
            previous_timestep=torch.from_numpy(previous.clip(min=0)).float(),
            mid_timestep=torch.from_numpy(mid).float(),
        )
        return keep_strength(plan, strength)

    def step(self, model, x, plan, i, carry=None, noise=None):
        extra, batch = plan.extra, x.shape[0]
        prediction = model(x, plan.timesteps[i].expand(batch))
        eps, earlier = prediction.eps, history(carry, "eps", min(i, 3))

        def transfer(e: Tensor, to: str = "transfer") -> Tensor:
            return torch.addcmul(extra[f"{to}_x"][i] * x, extra[f"{to}_eps"][i], e)

        last = i == len(plan) - 1
        if i < 3 and not last and not self.spec.skip_prk_steps:  # pseudo Runge-Kutta: four stages from x
            mid_t, end_t = extra["mid_timestep"][i].expand(batch), extra["previous_timestep"][i].expand(batch)
            e2 = model(transfer(eps, "mid"), mid_t).eps
            e3 = model(transfer(e2, "mid"), mid_t).eps
            outputs, rule = [eps, e2, e3, model(transfer(e3), end_t).eps], RUNGE_KUTTA
        elif i == 0 and not last:  # pseudo improved Euler: with the eps at the first-order result
            outputs, rule = [eps, model(transfer(eps), extra["previous_timestep"][i].expand(batch)).eps], IMPROVED_EULER
        elif last and self.spec.lower_order_final:
            outputs, rule = [eps], 0
        else:
            outputs = [eps, *earlier]
            rule = len(outputs) - 1
        weights = extra["eps_weights"][i, rule]  # (4,): the combination's weights times the transfer's
        x_next = extra["transfer_x"][i] * x
        for j, output in enumerate(outputs):
            x_next = torch.addcmul(x_next, weights[j], output)
        return sfumato.StepResult(x_next, prediction.x0, remember([eps, *earlier], "eps", 3))


def transfer_coefficients(a_t: Tensor, a_s: Tensor) -> tuple[Tensor, Tensor]:
    """The coefficients of ``x_t`` and of ``e`` in PNDM's transfer (Eq. 9) from ``alpha_bar = a_t``
    to ``a_s`` (elementwise, ``[N]`` each)."""
    x_coef = (a_s / a_t).sqrt()
    eps_coef = -(a_s - a_t) / (a_t * (1 - a_s).sqrt() + (a_t * (1 - a_t) * a_s).sqrt())
    return x_coef, eps_coef
