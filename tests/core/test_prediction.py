"""``Prediction.from_x0`` / ``from_eps`` complete a prediction from one of its halves, consistently
with the variance-preserving relation ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``."""

from __future__ import annotations

import torch

import sfumato


def test_from_x0_and_from_eps_invert_each_other():
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a = torch.tensor([0.9, 0.2]).reshape(2, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    from_x0 = sfumato.Prediction.from_x0(x0, x_t, a)
    from_eps = sfumato.Prediction.from_eps(eps, x_t, a)
    torch.testing.assert_close(from_x0.eps, eps)
    torch.testing.assert_close(from_eps.x0, x0)
    torch.testing.assert_close(from_x0.v, from_eps.v)


def test_from_x0_matches_the_schedules_conversion_of_a_sample_prediction():
    schedule = sfumato.NoiseSchedule(sfumato.DiffusionSpec(prediction="sample"))
    x_t, x0 = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    t = torch.tensor([500])
    expected = schedule.to_prediction(x0, x_t, t)
    ours = sfumato.Prediction.from_x0(x0, x_t, expected.alpha_bar)
    torch.testing.assert_close(ours.eps, expected.eps)
    torch.testing.assert_close(ours.x0, expected.x0)
