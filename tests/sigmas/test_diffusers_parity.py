"""``karras``, ``exponential`` and ``beta`` plan what diffusers' ``EulerDiscreteScheduler`` plans
with ``use_karras_sigmas``, ``use_exponential_sigmas`` and ``use_beta_sigmas``: the same float32
sigmas bit for bit (both compute in float64 numpy and round once), and the same timesteps within
two float32 ulps of 999 (diffusers converts each sigma to its timestep in float64, sfumato in
float32).

One step is left out: diffusers' ``linspace`` spacing then holds the single timestep 0, so its
"range" is the smallest sigma alone and its one-step run starts at sigma_min; sfumato's starts at
sigma_max.
"""

from __future__ import annotations

import itertools

import diffusers
import pytest
import torch

import sfumato
import sfumato_schedulers

BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
TIMESTEP_TOLERANCE = 2e-4  # two float32 ulps at 999 are 1.2e-4


@pytest.mark.parametrize("sigmas", ["karras", "exponential", "beta"])
def test_plans_match_euler_discrete_scheduler(sigmas):
    """(Every sigma-space sampler plans the same levels: ``test_samplers.py``.)"""
    failures = []
    for betas, zero_snr, steps in itertools.product(BETAS, (False, True), (2, 10, 25, 50)):
        if zero_snr and betas == "cosine":
            continue
        schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(
            betas=betas, beta_start=0.00085, beta_end=0.012, zero_terminal_snr=zero_snr))
        theirs = diffusers.EulerDiscreteScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=BETAS[betas],
            rescale_betas_zero_snr=zero_snr, **{f"use_{sigmas}_sigmas": True})
        theirs.set_timesteps(steps)
        plan = sfumato_schedulers.SCHEDULERS_BY_TYPE["euler"].from_spec({"sigmas": sigmas}).plan(schedule, steps)
        timestep_error = float((plan.timesteps - theirs.timesteps).abs().max())
        if not torch.equal(plan.sigmas, theirs.sigmas) or timestep_error > TIMESTEP_TOLERANCE:
            failures.append(f"{betas} zero_snr={zero_snr} {steps} steps: sigmas equal "
                            f"{torch.equal(plan.sigmas, theirs.sigmas)}, timesteps off by {timestep_error:.1e}")
    assert not failures, "\n".join(failures)


def test_beta_fields_are_diffusers_defaults():
    """diffusers' ``use_beta_sigmas`` fixes alpha = beta = 0.6; they are the defaults here."""
    assert sfumato.build_sigma_schedule("beta").spec.model_dump() == {
        "type": "beta", "alpha": 0.6, "beta": 0.6, "domain": "sigma"}
