"""The ``[runtime]`` table: where and how a pipeline runs (never what it computes)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

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
    channels_last: bool = Field(False, description="Use channels_last memory format for conv nets.")
    compile: bool = Field(False, description="torch.compile the denoiser.")
    vae_tiling: bool = Field(False, description="Decode large images tile by tile.")
    vae_slicing: bool = Field(False, description="Decode a batch one image at a time.")

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
