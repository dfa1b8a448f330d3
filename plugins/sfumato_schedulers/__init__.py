"""First-party samplers (docs/schedulers.md lists them), and the names other tools give them
(``names``, registered with ``register_sampler_aliases``).

One file per scheduler, each the model a third-party scheduler can copy; the timestep and sigma
spacing they share lives in ``spacing``. See docs/schedulers.md.
"""

from __future__ import annotations

import sfumato

from .ddim import DDIM
from .ddpm import DDPM
from .deis import DEIS
from .dpm2 import DPM2
from .dpm2_ancestral import DPM2Ancestral
from .dpmpp_2m import DPMSolverPlusPlus2M
from .dpmpp_3m import DPMSolverPlusPlus3M
from .dpmpp_2s_ancestral import DPMSolverPlusPlus2SAncestral
from .dpmpp_2m_sde import DPMSolverPlusPlus2MSDE
from .dpmpp_3m_sde import DPMSolverPlusPlus3MSDE
from .dpmpp_sde import DPMSolverPlusPlusSDE
from .er_sde import ERSDE
from .euler import Euler
from .euler_ancestral import EulerAncestral
from .heun import Heun
from .lcm import LCM
from .lms import LMS
from .names import sampler_aliases
from .pndm import PNDM
from .res_multistep import RESMultistep
from .restart import Restart
from .sa_solver import SASolver
from .tcd import TCD
from .unipc import UniPC

SFUMATO_PLUGIN_API = 1

SCHEDULERS = (DDPM, DDIM, Euler, EulerAncestral, Heun, DPMSolverPlusPlus2M,
              DPM2Ancestral, DPMSolverPlusPlus2SAncestral, DPMSolverPlusPlusSDE, DPMSolverPlusPlus2MSDE, DPMSolverPlusPlus3MSDE, LCM, TCD, Restart, ERSDE, SASolver,
              LMS, PNDM, DPM2, DPMSolverPlusPlus3M, UniPC, DEIS, RESMultistep)
SCHEDULERS_BY_TYPE = {scheduler.type_name(): scheduler for scheduler in SCHEDULERS}


@sfumato.hookimpl
def register_components(register):
    for scheduler in SCHEDULERS:
        register(scheduler)


@sfumato.hookimpl
def register_sampler_aliases(register):
    """ComfyUI's and the WebUI's names of these samplers and of the sigma schedules (``names``)."""
    for name, table in sampler_aliases(set(SCHEDULERS_BY_TYPE)):
        register(name, table)
