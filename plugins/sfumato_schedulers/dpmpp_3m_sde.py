"""DPM-Solver++(3M) SDE (Lu et al. 2022, https://arxiv.org/abs/2211.01095; k-diffusion's
``sample_dpmpp_3m_sde``; the WebUI's "DPM++ 3M SDE"; ComfyUI's ``dpmpp_3m_sde``), with
Brownian-tree noise: ``dpmpp-2m-sde``'s update with a third-order term from the x0 of the two
steps before (``sde_dpm_solver_weights``), warming up through first and second order (the
latter in the "heun" form, as k-diffusion has it).

diffusers' ``DPMSolverMultistepScheduler`` (``algorithm_type = "sde-dpmsolver++"``,
``solver_order = 3``) differs at third order: it weights ``D2`` by ``(1 - e^-2h - 2h) / (2h)^2
- 1/2`` where k-diffusion (and the ODE's limit) has ``(e^-2h - 1 + 2h) / (2h)^2 - 1/2``, and it
lowers the second-to-last step to second order below 15 steps; sfumato follows k-diffusion.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .dpmpp_2m_sde import DPMSolverPlusPlus2MSDE
from .spacing import SigmaStepOptions


class DPMSolverPlusPlus3MSDE(DPMSolverPlusPlus2MSDE):
    """Third-order multistep SDE solver; stochastic (at ``eta > 0``), one model call per step."""

    order = 3

    class Spec(SigmaStepOptions):
        type: Literal["dpmpp-3m-sde"] = "dpmpp-3m-sde"
        eta: float = Field(1.0, ge=0, description="Weight of the fresh noise: 1 is the SDE solver, 0 is its ODE.")

    def second_order_form(self) -> str:
        """k-diffusion's warm-up step uses the "heun" form."""
        return "heun"
