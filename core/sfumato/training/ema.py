"""Exponential moving average of a model's weights (Polyak averaging), kept in float32."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


class EMA:
    """``shadow = d * shadow + (1 - d) * weight`` after every optimiser step, for every floating
    parameter and buffer of the tracked modules.

    The decay warms up as ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
    averages are not dominated by the random initialisation (as in TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``, used by the DDPM and LDM code bases).
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.modules = modules
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, dict[str, Tensor]] = {
            name: {k: v.detach().clone().float() for k, v in self._tracked(module)} for name, module in modules.items()
        }

    @staticmethod
    def _tracked(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
        for key, value in module.state_dict(keep_vars=True).items():
            if value.is_floating_point():
                yield key, value

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, module in self.modules.items():
            shadow = self.shadow[name]
            for key, value in self._tracked(module):
                shadow[key].lerp_(value.detach().float(), 1 - decay)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the averaged weights into the modules for the block (sampling, saving)."""
        saved = {name: {k: v.detach().clone() for k, v in self._tracked(m)} for name, m in self.modules.items()}
        self._copy_into(self.shadow)
        try:
            yield
        finally:
            self._copy_into(saved)

    def _copy_into(self, states: dict[str, dict[str, Tensor]]) -> None:
        with torch.no_grad():
            for name, module in self.modules.items():
                for key, value in self._tracked(module):
                    value.copy_(states[name][key])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for name, shadow in state["shadow"].items():
            for key, value in shadow.items():
                self.shadow[name][key].copy_(value)
