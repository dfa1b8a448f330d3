"""First-party noise formulations (the ``[diffusion] type`` of a spec).

- ``flow``: rectified flow / flow matching (SD3, Flux), ``flow.py``;
- ``edm``: Karras et al. 2022's continuous sigma with preconditioning, ``edm.py``.

Each is written against ``sfumato.Formulation`` only, as a third-party formulation would be. The
default, ``vp`` (``sfumato.NoiseSchedule``), is the core's own: every registry has it.
See docs/formulations.md.
"""

from __future__ import annotations

import sfumato

from .edm import EDM
from .flow import FlowMatching

SFUMATO_PLUGIN_API = 1

FORMULATIONS = (FlowMatching, EDM)


@sfumato.hookimpl
def register_components(register):
    for formulation in FORMULATIONS:
        register(formulation)


__all__ = ["EDM", "FORMULATIONS", "FlowMatching"]
