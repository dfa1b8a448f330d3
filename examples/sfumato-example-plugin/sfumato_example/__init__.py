"""An example third-party sfumato plugin: adaptive projected guidance, type ``example.apg``."""

from __future__ import annotations

import sfumato

from .apg import AdaptiveProjectedGuidance

__version__ = "0.1.0"
SFUMATO_PLUGIN_API = 1


@sfumato.hookimpl
def register_components(register):
    register(AdaptiveProjectedGuidance)
