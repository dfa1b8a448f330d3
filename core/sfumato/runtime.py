"""The ``[runtime]`` table: where and how a pipeline runs (never what it computes)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from .component import SPEC_TABLE_CONFIG

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RuntimeSpec(BaseModel):
    model_config = SPEC_TABLE_CONFIG

    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; one "
                        "this machine has.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Weights and activations dtype of the networks."
    )
    attention: Literal["sdpa", "math"] = Field(
        "sdpa", description="sdpa: torch scaled_dot_product_attention (fused kernels); math: reference."
    )
    autocast: Literal["none", "bfloat16", "float16"] = Field(
        "none", description="Run matmuls, convolutions and attention in this dtype under torch.autocast, with "
        "float32 weights and float32 normalisations and softmax (needs dtype = float32): closer to float32 than "
        "dtype = bfloat16, but weights are cast at every call, so on small models it is not faster (see "
        "docs/benchmarks.md).",
    )
    channels_last: bool = Field(False, description="Use channels_last memory format for conv nets.")
    compile: bool = Field(False, description="torch.compile the denoiser.")
    vae_tiling: bool = Field(False, description="Decode large images tile by tile.")
    vae_slicing: bool = Field(False, description="Decode a batch one image at a time.")
    allow_untrained: bool = Field(
        False, description="Build components that take weights but name none, from random initialisation "
        "(tests, smoke runs). Otherwise a pipeline refuses them: their output would be noise. Training "
        "starts from random weights regardless.",
    )

    @field_validator("device")
    @classmethod
    def _device_is_available(cls, device: str) -> str:
        check_device(device)
        return device

    @model_validator(mode="after")
    def _autocast_needs_float32_weights(self):
        if self.autocast != "none" and self.dtype != "float32":
            raise ValueError(f"autocast = {self.autocast!r} with dtype = {self.dtype!r}: autocast keeps float32 weights "
                             "and casts per operation; set dtype = \"float32\", or drop autocast to run every "
                             f"layer in {self.dtype}")
        return self

    def autocast_context(self, device: torch.device):
        """``torch.autocast`` for this runtime (a disabled one when ``autocast = "none"``)."""
        enabled = self.autocast != "none"
        return torch.autocast(device.type, dtype=DTYPES[self.autocast] if enabled else None, enabled=enabled)

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def available_devices() -> list[str]:
    """The ``[runtime] device`` values this machine can run: auto and cpu, then what it has."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_device(name: str) -> None:
    """Raise ``ValueError`` naming the available devices when ``name`` is not one of them."""
    available = available_devices()
    if name in available:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; this machine has: {', '.join(available)}") from None
    if device.type == "cpu":  # cpu:0 and the like
        return
    raise ValueError(f"device {name!r} is not available on this machine; it has: {', '.join(available)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
