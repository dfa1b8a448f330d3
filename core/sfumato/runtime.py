"""The ``[runtime]`` table: where and how a pipeline runs (never what it computes)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
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
    compile: bool = Field(False, description="torch.compile the denoiser: by default each of its repeated blocks "
                          "once (see compile_scope).")
    compile_scope: Literal["blocks", "denoiser"] = Field(
        "blocks", description="With compile = true, blocks: compile each block class the denoiser declares "
        "repeated (Denoiser.repeated_blocks) once, its instances sharing the compiled code (regional "
        "compilation: 0.5-0.7x the compile time, a step 2-5% slower, docs/benchmarks.md); denoiser: "
        "compile the whole forward as one graph (what a denoiser that declares no repeated blocks gets either way).",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads torch uses during a pipeline call (set on entering the call, "
        "restored on leaving it). None: the process's own setting when it was chosen (OMP_NUM_THREADS, "
        "MKL_NUM_THREADS or torch.set_num_threads), else one core fewer than this process may run on (at least "
        "one, at most torch's default): a busy neighbour on a core then cannot stall every operation's "
        "threads (docs/benchmarks.md, Threads).",
    )
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
    def _compile_scope_needs_compile(self):
        if self.compile_scope != "blocks" and not self.compile:  # the default round-trips (to_dict writes it)
            raise ValueError(f"compile_scope = {self.compile_scope!r} has no effect without compile = true; set "
                             "compile = true, or drop compile_scope")
        return self

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

    def call_threads(self) -> int:
        """The CPU thread count a pipeline call runs with (``threads``, or the default rule)."""
        return self.threads if self.threads is not None else default_threads()

    @contextmanager
    def threads_context(self) -> Iterator[None]:
        """Run the ``with`` block on ``call_threads()`` torch threads, then restore the process's count."""
        before, wanted = torch.get_num_threads(), self.call_threads()
        if wanted == before:
            yield
            return
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @contextmanager
    def call_context(self, device: torch.device) -> Iterator[None]:
        """What a pipeline call enters: ``threads_context`` and ``autocast_context``."""
        with self.threads_context(), self.autocast_context(device):
            yield

    def compile_denoiser(self, denoiser: nn.Module) -> None:
        """Apply ``compile`` / ``compile_scope`` to ``denoiser`` in place (nothing when compile is off)."""
        if self.compile:
            compile_denoiser(denoiser, self.compile_scope)

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


#: torch's thread count when sfumato was imported: a different count at call time was chosen by the
#: program (``torch.set_num_threads``), and a default thread count leaves it alone.
_THREADS_AT_IMPORT = torch.get_num_threads()
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_threads() -> int:
    """``[runtime] threads = None``: the process's count when the user chose it (an environment
    variable torch reads, or ``torch.set_num_threads`` since import), else one core fewer than the
    process may run on, at least one and at most torch's default.

    Why: torch's default is one thread per physical core, and every parallel operation waits at a
    barrier for its slowest thread. With another busy process on one core, a thread there is
    descheduled for whole time slices and a forward takes several times longer than on one thread
    fewer (measured in docs/benchmarks.md, Threads). The count depends only on the machine and
    the process's settings, never on the load at the moment: a thread count changes the last bits
    of a float32 result, and a run must make the same image on the same machine.
    """
    current = torch.get_num_threads()
    if any(os.environ.get(name) for name in THREAD_ENVIRONMENT) or current != _THREADS_AT_IMPORT:
        return current
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores - 1, _THREADS_AT_IMPORT))


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost submodules of ``model`` whose class is one of ``model.repeated_blocks`` (a
    block inside another listed block is compiled as part of it)."""
    classes = tuple(getattr(model, "repeated_blocks", ()))
    if not classes:
        return []
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if name and isinstance(module, classes) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return [module for _, module in found]


def compile_denoiser(denoiser: nn.Module, scope: Literal["blocks", "denoiser"] = "blocks",
                     backend: str | Callable[..., Any] = "inductor") -> None:
    """``torch.compile`` ``denoiser`` in place.

    ``blocks`` (regional compilation, as diffusers' ``compile_repeated_blocks``): each block of
    ``repeated_blocks(denoiser)`` gets ``torch.compile(block.forward, dynamic=False)``. Dynamo
    keeps compiled code per code object, so the instances of one block class share it: a block
    compiles once per distinct input shape, not once per instance, and the code between blocks
    (embeddings, resamplers, skips) runs eagerly. ``denoiser``, or a model declaring no repeated
    blocks: its whole ``forward`` as one graph. ``backend`` is ``torch.compile``'s (tests trace
    with ``"aot_eager"``, which skips Inductor's code generation).
    """
    blocks = repeated_blocks(denoiser) if scope == "blocks" else []
    if not blocks:
        denoiser.forward = torch.compile(denoiser.forward, backend=backend)
        return
    instances: dict[type, int] = {}
    for block in blocks:
        instances[type(block)] = instances.get(type(block), 0) + 1
        block.forward = torch.compile(block.forward, dynamic=False, backend=backend)
    _allow_recompiles(2 * max(instances.values()))


def _allow_recompiles(entries: int) -> None:
    """Raise dynamo's ``recompile_limit`` (compiled entries per code object, 8 by default) to
    ``entries``, never lower it. With ``dynamic=False`` each distinct input shape of a block class
    (the U-Net's levels differ in width and size) is one more entry on the class's ``forward``,
    and a model patch inside a block one more; past the limit dynamo would silently run the rest
    eagerly. ``compile_denoiser`` asks for two entries per instance of its most repeated class."""
    import torch._dynamo.config as dynamo_config

    if dynamo_config.recompile_limit < entries:
        dynamo_config.recompile_limit = entries
