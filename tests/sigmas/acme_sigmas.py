"""A third-party sigma-schedule plugin, as a user would write one: ``acme_sigmas.linear`` (levels
linear in sigma) and ``acme_sigmas.rising``, a faulty schedule whose levels go up."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import sfumato

SFUMATO_PLUGIN_API = 1


class Linear(sfumato.SigmaSchedule):
    """``steps`` levels evenly from ``sigma_max`` to ``floor * sigma_max``."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["acme_sigmas.linear"] = "acme_sigmas.linear"
        floor: float = Field(0.01, gt=0, lt=1, description="The last level, as a fraction of sigma_max.")

    def sigmas(self, formulation, steps):
        return torch.linspace(1, self.spec.floor, steps) * formulation.sigma_max


class Rising(sfumato.SigmaSchedule):
    class Spec(sfumato.ComponentSpec):
        type: Literal["acme_sigmas.rising"] = "acme_sigmas.rising"

    def sigmas(self, formulation, steps):
        return torch.linspace(formulation.sigma_min, formulation.sigma_max, steps)


@sfumato.hookimpl
def register_components(register):
    register(Linear)
    register(Rising)
