"""The ``[runtime]`` table: where and how a pipeline runs (never what it computes)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RuntimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
