"""First-party sigma schedules: the noise levels a run visits, for every sigma-space sampler.

One file per family, each the model a third-party schedule can copy:

- ``karras``: Karras et al. 2022, Eq. 5 (``karras``);
- ``log_sigma``: uniform or polynomial in log-sigma (``exponential``, ``polyexponential``);
- ``timestep_uniform``: evenly over the training timesteps (``simple``, ``ddim-uniform``,
  ``normal``, ``sgm-uniform``);
- ``beta``: quantiles of a beta distribution (``beta``);
- ``kl_optimal``, ``linear_quadratic``, ``align_your_steps``: one schedule each.

Names follow ComfyUI's schedulers, with '-' for '_' (sfumato's type names use hyphens). Every
schedule computes in float64 and returns float32, and uses only the ``sfumato.NoiseLevels``
members of the model's formulation. See docs/schedulers.md.
"""

from __future__ import annotations

import sfumato

from .align_your_steps import AlignYourSteps
from .beta import Beta
from .karras import Karras
from .kl_optimal import KLOptimal
from .linear_quadratic import LinearQuadratic
from .log_sigma import Exponential, PolyExponential
from .timestep_uniform import DDIMUniform, Normal, SGMUniform, Simple

SFUMATO_PLUGIN_API = 1

SIGMA_SCHEDULES = (
    Simple, Normal, SGMUniform, DDIMUniform, Karras, Exponential, PolyExponential, Beta, KLOptimal,
    LinearQuadratic, AlignYourSteps,
)
SIGMA_SCHEDULES_BY_TYPE = {schedule.type_name(): schedule for schedule in SIGMA_SCHEDULES}


@sfumato.hookimpl
def register_components(register):
    for schedule in SIGMA_SCHEDULES:
        register(schedule)
