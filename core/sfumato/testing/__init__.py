"""``sfumato.testing``: what plugin authors need to test their plugins.

- ``fresh_registry``: a registry with only the plugins you name (a context manager), and the
  ``sfumato_registry`` pytest fixture built on it (this package is a pytest plugin, registered
  through the ``pytest11`` entry point, so the fixture is available wherever sfumato is installed).
- Conformance suites, one per kind: subclass one in a ``Test*`` class, set its class attributes,
  and pytest runs every check against your component.
"""

from __future__ import annotations

from .combiner_conformance import CombinerConformance
from .conformance import (
    AutoencoderConformance,
    ComponentConformance,
    DenoiserConformance,
    EncoderConformance,
    GuidanceConformance,
    ModuleConformance,
    analytic_predictor,
)
from .fixtures import fresh_registry
from .scheduler_conformance import SchedulerConformance
