"""The beta schedule's inverse CDF (no SciPy at run time) against ``scipy.stats.beta.ppf``, and the
two readings of ``beta``: over sigma (diffusers, the default) and over timesteps (ComfyUI)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
import torch

import sfumato
from sfumato_sigmas.beta import beta_ppf
from sigmas.formulations import stable_diffusion

PROBABILITIES = np.concatenate([np.linspace(0, 1, 201), [1e-12, 1e-9, 1e-6, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12]])


@pytest.mark.parametrize("alpha, beta", list(itertools.product((0.1, 0.6, 1.0, 2.5, 30.0), (0.1, 0.6, 1.0, 2.5, 30.0))))
def test_ppf_matches_scipy(alpha, beta):
    error = np.abs(beta_ppf(PROBABILITIES, alpha, beta) - scipy.stats.beta.ppf(PROBABILITIES, alpha, beta))
    assert error.max() <= 1e-12, f"max error {error.max():.1e} at q = {PROBABILITIES[error.argmax()]}"


def test_ppf_ends_are_exact():
    assert beta_ppf(np.array([0.0, 1.0]), 0.6, 0.6).tolist() == [0.0, 1.0]


def test_default_beta_is_linear_in_sigma_between_the_model_ends():
    schedule = stable_diffusion()
    levels = sfumato.build_sigma_schedule("beta").sigmas(schedule, 10).double()
    quantiles = scipy.stats.beta.ppf(1 - np.linspace(0, 1, 10), 0.6, 0.6)
    expected = schedule.sigma_min + quantiles * (schedule.sigma_max - schedule.sigma_min)
    torch.testing.assert_close(levels, torch.from_numpy(expected), rtol=1e-6, atol=0)


def test_timestep_domain_picks_training_levels():
    schedule = stable_diffusion()
    levels = sfumato.build_sigma_schedule({"type": "beta", "domain": "timestep"}).sigmas(schedule, 10)
    assert all(bool((schedule.sigmas == level).any()) for level in levels)
    assert float(levels[0]) == schedule.sigma_max


def test_timestep_domain_refuses_steps_that_round_to_the_same_timestep():
    """ComfyUI silently runs fewer steps; sfumato says so and what would work."""
    schedule = sfumato.build_sigma_schedule({"type": "beta", "domain": "timestep"})
    expected = r"\[scheduler\] sigmas = 'beta'.*distinct training timesteps.*domain = 'sigma'"
    with pytest.raises(sfumato.SpecError, match=expected):
        schedule.sigmas(stable_diffusion(), 900)
