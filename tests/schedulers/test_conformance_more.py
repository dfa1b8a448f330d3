"""The samplers added for sampler breadth pass the shipped scheduler conformance suite, each
with its true ``order`` (the kit measures it on Gaussian data on VP, flow and EDM)."""

from __future__ import annotations

from schedulers.test_conformance import FirstParty


class TestLMS(FirstParty):
    spec = {"type": "lms"}
    # Order 4 on the VP model's default levels (the sigmas of linspace timesteps, whose first
    # steps are long) is still pre-asymptotic at 16-64 steps: errors 4.5e-2, 1.3e-2, 1.8e-3, 9e-5
    # at 32, 64, 128, 256 steps; the kit measures the last three.
    convergence_steps = (64, 128, 256)


class TestLMSOrder2Karras(FirstParty):
    variant = True
    spec = {"type": "lms", "order": 2, "sigmas": "karras"}


class TestPNDM(FirstParty):
    spec = {"type": "pndm"}
    # Second order, pre-asymptotic on the VP model below 64 steps: errors 7.6e-2, 3.9e-2, 1.5e-2,
    # 3.7e-3 at 32, 64, 128, 256 steps.
    convergence_steps = (64, 128, 256)


class TestPLMS(TestPNDM):
    spec = {"type": "pndm", "skip_prk_steps": True, "steps_offset": 1}


class TestPLMSTrailing(FirstParty):
    variant = True
    spec = {"type": "pndm", "skip_prk_steps": True, "spacing": "trailing"}
    formulations = ({"type": "vp"}, {"type": "edm"})  # flow's alpha_bar is 0 at timestep 999: refused
    convergence_steps = (64, 128, 256)


class TestDPM2(FirstParty):
    spec = {"type": "dpm2"}
    # Pre-asymptotic on the VP model's default levels below 64 steps (as Heun is): errors fall
    # 2.0x, 2.3x, 2.7x, 3.1x per doubling from 16 to 256 steps.
    convergence_steps = (64, 128, 256)


class TestDPM2Beta(FirstParty):
    variant = True
    spec = {"type": "dpm2", "sigmas": "beta", "spacing": "trailing"}


class TestDPMSolverPlusPlus3M(FirstParty):
    # karras, as for dpmpp-2m: flow matching's default levels are even in sigma, so in log sigma
    # the last steps are several times longer than the ones before and every multistep
    # exponential integrator converges slowly there (dpmpp-2m: 1.4e-1, 4.5e-2, 1.1e-2 at 32,
    # 64, 128 steps; dpmpp-3m: 1.1e-1, 8.0e-2, 1.7e-2).
    spec = {"type": "dpmpp-3m", "sigmas": "karras"}


class TestDPMSolverPlusPlus3MDefault(FirstParty):
    variant = True
    spec = {"type": "dpmpp-3m", "spacing": "trailing"}
    formulations = ({"type": "vp"}, {"type": "edm"})


class TestDPMSolverPlusPlus3MExponential(FirstParty):
    variant = True
    spec = {"type": "dpmpp-3m", "sigmas": "exponential"}
    diffusion = {"betas": "cosine", "prediction": "v"}


# UniPC's order is the predictor's plus one (the corrector's), measured on karras and exponential
# levels (on flow matching's default levels, even in sigma, the multistep solvers converge slowly:
# see TestDPMSolverPlusPlus3M).
class TestUniPC(FirstParty):
    spec = {"type": "unipc", "sigmas": "karras"}


class TestUniPCOrder1Bh1(FirstParty):
    variant = True
    spec = {"type": "unipc", "order": 1, "variant": "bh1", "sigmas": "exponential"}


class TestUniPCOrder3Bh1(FirstParty):
    variant = True
    spec = {"type": "unipc", "order": 3, "variant": "bh1", "sigmas": "karras", "disable_corrector": [0]}


class TestDEIS(FirstParty):
    spec = {"type": "deis", "sigmas": "karras"}


class TestDEISOrder3(FirstParty):
    variant = True
    spec = {"type": "deis", "order": 3, "sigmas": "karras"}
    diffusion = {"betas": "linear", "prediction": "sample"}


class TestRESMultistep(FirstParty):
    spec = {"type": "res-multistep", "sigmas": "karras"}


class TestRESMultistepDefault(FirstParty):
    variant = True
    spec = {"type": "res-multistep", "spacing": "trailing"}


class TestEulerChurn(FirstParty):
    spec = {"type": "euler", "s_churn": 10.0, "sigmas": "karras"}


class TestHeunChurn(FirstParty):
    spec = {"type": "heun", "s_churn": 2.0, "s_tmin": 0.05, "s_noise": 1.003}


class TestDPM2Churn(FirstParty):
    spec = {"type": "dpm2", "s_churn": 5.0, "s_tmin": 0.5, "sigmas": "exponential"}
