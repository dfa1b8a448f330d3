"""Every formulation converts consistently: what the network is trained to output at
``add_noise(x0, noise, t)`` converts back to exactly that x0 and noise, ``to_output`` inverts
``to_prediction``, the grid's sigma and timestep coordinates invert each other, and the VP
formulation keeps today's numbers bit for bit."""

from __future__ import annotations

import pytest
import torch

import sfumato

FORMULATIONS = {
    "vp-epsilon": {"type": "vp"},
    "vp-v": {"type": "vp", "prediction": "v"},
    "vp-sample": {"type": "vp", "prediction": "sample", "betas": "cosine"},
    "flow": {"type": "flow", "shift": 3.0},
    "flow-dynamic": {"type": "flow", "dynamic_shift": True},
    "edm-epsilon": {"type": "edm"},
    "edm-v": {"type": "edm", "prediction": "v", "sigma_data": 1.0},
    "edm-sample": {"type": "edm", "prediction": "sample"},
}


def build(name: str) -> sfumato.Formulation:
    return sfumato.build("formulation", FORMULATIONS[name])


@pytest.mark.parametrize("name", FORMULATIONS)
def test_the_training_target_converts_back_to_the_clean_sample_and_the_noise(name):
    formulation = build(name)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([1.0, 250.5, 700.0, formulation.num_timesteps - 1.0])
    x_t = formulation.add_noise(x0, noise, t)
    prediction = formulation.to_prediction(formulation.training_target(x0, noise, t), x_t, t)
    torch.testing.assert_close(prediction.x0, x0, rtol=1e-4, atol=1e-4)
    # eps = (x - x0) / sigma is ill-conditioned where sigma is tiny (EDM's 0.002 at t = 1) for a
    # network that predicts x0: compare it where the noise is visible
    visible = slice(1, None) if name == "edm-sample" else slice(None)
    torch.testing.assert_close(prediction.eps[visible], noise[visible], rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(formulation.to_output(prediction, x_t, t),
                               formulation.training_target(x0, noise, t), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_sigma_and_timestep_coordinates_invert_each_other(name):
    formulation = build(name)
    t = torch.tensor([0.0, 3.25, 500.0, formulation.num_timesteps - 1.0])
    torch.testing.assert_close(formulation.timestep_at(formulation.sigma_at(t)), t, rtol=1e-5, atol=2e-3)
    assert torch.all(formulation.sigmas.diff() > 0) and formulation.sigmas.shape == (formulation.num_timesteps,)
    torch.testing.assert_close(formulation.alpha_bar(torch.arange(formulation.num_timesteps).float()),
                               formulation.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_the_native_sample_is_alpha_x0_plus_sigma_eps_and_the_model_sees_its_vp_normalisation():
    flow = build("flow")
    x0, noise = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    t = torch.tensor([100.0, 900.0])
    sigma = flow.sigma_at(t).reshape(-1, 1, 1, 1)
    native = flow.noised_native(x0, noise, sigma)
    torch.testing.assert_close(native, (1 - sigma) * x0 + sigma * noise)
    x_t = flow.add_noise(x0, noise, t)
    network_input, time = flow.network_input(x_t, t)
    torch.testing.assert_close(network_input, native, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(time, flow.sigma_at(t) * 1000)  # diffusers' FlowMatchEuler timesteps
    prediction = flow.to_prediction(noise - x0, x_t, t)
    torch.testing.assert_close(flow.derivative(prediction), noise - x0, rtol=1e-4, atol=1e-4)  # dx/dsigma = v


def test_edm_calls_its_network_with_karras_preconditioning():
    edm = build("edm-epsilon")
    x_t, t = torch.randn(1, 3, 2, 2), torch.tensor([600.0])
    sigma = float(edm.sigma_at(t))
    network_input, time = edm.network_input(x_t, t)
    native = x_t * (1 + sigma**2) ** 0.5
    torch.testing.assert_close(network_input, native / (sigma**2 + 0.25) ** 0.5)
    torch.testing.assert_close(time, torch.tensor([0.25 * torch.tensor(sigma).log().item()]))
    assert edm.sigma_min == pytest.approx(0.002, rel=1e-5) and edm.sigma_max == pytest.approx(80.0, rel=1e-5)


def test_the_vp_formulation_is_todays_noise_schedule_bit_for_bit():
    vp = build("vp-epsilon")
    assert isinstance(vp, sfumato.NoiseSchedule)
    x_t, output, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([10.0, 999.0])
    a = vp.alpha_bar(t).reshape(-1, 1, 1, 1)
    prediction = vp.predict(lambda x, time, cond: output, x_t, t, sfumato.Conditioning())
    assert torch.equal(prediction.x0, (x_t - (1 - a).sqrt() * output) / a.sqrt())
    assert torch.equal(vp.derivative(prediction), prediction.eps)
    assert vp.network_input(x_t, t)[0] is x_t


def test_a_spec_without_a_diffusion_type_is_vp_and_a_flow_table_validates(tmp_path):
    (tmp_path / "vp.toml").write_text("[diffusion]\nbetas = \"linear\"\n")
    assert sfumato.get_registry() is not None
    from sfumato.specs import load_spec

    spec = load_spec(tmp_path / "vp.toml", sfumato.get_registry())
    assert spec.diffusion.type == "vp" and spec.diffusion.betas == "linear"
    (tmp_path / "flow.toml").write_text("[diffusion]\ntype = \"flow\"\nshift = 3.0\n")
    assert load_spec(tmp_path / "flow.toml", sfumato.get_registry()).diffusion.shift == 3.0
    (tmp_path / "bad.toml").write_text("[diffusion]\ntype = \"flow\"\nbetas = \"linear\"\n")
    with pytest.raises(sfumato.SpecError, match=r"\[diffusion\] betas: unknown field"):
        load_spec(tmp_path / "bad.toml", sfumato.get_registry())


def test_flow_dynamic_shift_follows_the_number_of_image_tokens():
    flow = build("flow-dynamic")
    small, large = flow.for_sample((1, 16, 32, 32)), flow.for_sample((1, 16, 128, 128))
    # Flux: mu = 0.5 at 256 tokens (32 x 32 latents in 2 x 2 patches), 1.15 at 4096 (128 x 128)
    assert small.mu == pytest.approx(0.5) and large.mu == pytest.approx(1.15)
    assert float(large.default_sigmas(4)[1]) > float(small.default_sigmas(4)[1])  # more steps at high noise
    static = build("flow")
    assert static.for_sample((1, 4, 8, 8)) is static  # a static shift does not depend on the resolution


def test_extends_keeps_a_base_formulation_and_a_type_change_drops_the_old_fields(tmp_path):
    from sfumato.specs import load_spec

    registry = sfumato.get_registry()
    (tmp_path / "flow.toml").write_text("[diffusion]\ntype = \"flow\"\nshift = 3.0\n")
    (tmp_path / "child.toml").write_text("extends = \"flow.toml\"\n[diffusion]\ntimesteps = 500\n")
    child = load_spec(tmp_path / "child.toml", registry).diffusion
    assert (child.type, child.shift, child.timesteps) == ("flow", 3.0, 500)  # not switched back to vp
    (tmp_path / "vp.toml").write_text("[diffusion]\nbetas = \"linear\"\ntimesteps = 800\n")
    (tmp_path / "to-flow.toml").write_text("extends = \"vp.toml\"\n[diffusion]\ntype = \"flow\"\n")
    switched = load_spec(tmp_path / "to-flow.toml", registry).diffusion
    assert (switched.type, switched.timesteps) == ("flow", 800)  # betas dropped, timesteps shared
    over = load_spec(tmp_path / "vp.toml", registry, ["diffusion.type=edm"]).diffusion
    assert over.type == "edm" and over.timesteps == 800
