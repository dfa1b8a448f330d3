"""First-party generation tasks: text-to-image, image-to-image, inpainting, class-conditional
and unconditional generation. Each is the core's ``sfumato.generate`` with the inputs its
task needs checked up front."""

from __future__ import annotations

import sfumato

from .generation_tasks import TASKS

SFUMATO_PLUGIN_API = 1


@sfumato.hookimpl
def register_components(register):
    for task in TASKS:
        register(task)
