"""First-party samplers: DDPM, DDIM, Euler, Euler ancestral, Heun and DPM-Solver++(2M).

One file per scheduler, each the model a third-party scheduler can copy; the timestep and sigma
spacing they share lives in ``spacing``. See docs/schedulers.md.
"""

from __future__ import annotations

import sfumato

from .ddim import DDIM
from .ddpm import DDPM
from .dpmpp_2m import DPMSolverPlusPlus2M
from .euler import Euler
from .euler_ancestral import EulerAncestral
from .heun import Heun

SFUMATO_PLUGIN_API = 1

SCHEDULERS = (DDPM, DDIM, Euler, EulerAncestral, Heun, DPMSolverPlusPlus2M)
SCHEDULERS_BY_TYPE = {scheduler.type_name(): scheduler for scheduler in SCHEDULERS}


@sfumato.hookimpl
def register_components(register):
    for scheduler in SCHEDULERS:
        register(scheduler)
