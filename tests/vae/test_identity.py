"""identity: the pixel-space autoencoder is exactly a fixed scaling."""

from __future__ import annotations

import pytest
import torch

import sfumato
from sfumato.testing import AutoencoderConformance
from sfumato_vae import IdentityAutoencoder


class TestIdentityConformance(AutoencoderConformance):
    spec = {"type": "identity", "scaling_factor": 0.5}
    component_class = IdentityAutoencoder

    def test_weights_round_trip_through_safetensors(self):
        pytest.skip("identity has no weights (checked by test_has_no_parameters)")

    def test_runs_in_bfloat16(self):
        images = self.images(torch.bfloat16)
        assert self.build().encode(images).dtype == torch.bfloat16


def test_has_no_parameters():
    assert list(IdentityAutoencoder.from_spec({}).parameters()) == []


def test_encode_scales_and_decode_unscales_exactly():
    model = sfumato.build("autoencoder", {"type": "identity", "scaling_factor": 4.0})
    images = torch.rand(2, 3, 5, 7) * 2 - 1
    assert (model.latent_channels, model.downscale) == (3, 1)
    assert torch.equal(model.encode(images), images * 4.0)
    assert torch.equal(model.decode(model.encode(images)), images)
    assert torch.equal(model.encode(images, generator=torch.Generator().manual_seed(0)), images * 4.0)
