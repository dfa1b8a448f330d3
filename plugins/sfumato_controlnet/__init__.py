"""sfumato plugin ``controlnet``: ``[[controlnet]]`` spec lists of ControlNets (diffusers'
``ControlNetModel`` folders) that steer a U-Net with control images (``pipe(prompt,
control_image=image)``; several ControlNets take a list of images), with text-to-image,
image-to-image and inpainting alike. Built on ``register_spec_tables`` and
``sfumato.conditioners``, as a third-party plugin would be. See docs/models.md, "ControlNet"."""

from __future__ import annotations

import sfumato

from .component import ControlNet, DiffusersControlNet, control_pixels
from .model import ControlNetwork

SFUMATO_PLUGIN_API = 1

__all__ = ["ControlNet", "ControlNetwork", "DiffusersControlNet", "control_pixels"]


@sfumato.hookimpl
def register_spec_tables(register):
    register("controlnet", ControlNet, many=True,
             description="ControlNets steering the U-Net with control images (control_image=...)")


@sfumato.hookimpl
def register_components(register):
    register(DiffusersControlNet)
