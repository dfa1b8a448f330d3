"""sfumato plugin ``adapters``: LoRA (diffusers / PEFT and kohya / WebUI files, LoCon convolutions)
and textual inversion (diffusers and WebUI embeddings), the ``[[adapters]]`` of a spec; and
trainable LoRA factors (``LoRA.Trainable``) that the ``train-lora`` recipe saves in those files."""

from __future__ import annotations

import sfumato

from .lora import LoRA, LoRASpec
from .lora_formats import LoRALayer, read_lora
from .lora_training import TARGET_GROUPS, TrainableLoRA
from .textual_inversion import TextualInversion, TextualInversionSpec, read_embedding

SFUMATO_PLUGIN_API = 1

__all__ = ["LoRA", "LoRASpec", "LoRALayer", "read_lora", "TARGET_GROUPS", "TrainableLoRA", "TextualInversion",
           "TextualInversionSpec", "read_embedding"]


@sfumato.hookimpl
def register_components(register):
    register(LoRA)
    register(TextualInversion)
