"""The ``adapter`` kind: changes loaded on top of a pipeline's built components (LoRA, textual
inversion), listed in a spec's ``[[adapters]]`` table and applied in order after the components
are built (``Pipeline.load_adapter`` does the same from Python).

An adapter type subclasses ``Adapter`` with a Spec derived from ``AdapterSpec`` (whose ``weights``
is a ``SpecPath``: an image's lock hashes the file and ``--from`` checks it). It reaches the
components only through what they offer publicly:

- ``named_modules()``, and ``foreign_module_names(format)``, a method a denoiser or encoder
  offers to say which of its layers another library's module names mean (``"diffusers"``: the
  names diffusers and transformers give the same layers: ``down_blocks.0.attentions.0.
  transformer_blocks.0.attn1.to_q``, ``text_model.encoder.layers.0.self_attn.q_proj``), as
  ``{foreign name: AdapterTarget(module, rows)}``; ``rows`` is set when the foreign layer is a
  range of output rows of one fused layer (CLIP's ``q_proj`` in sfumato's fused ``qkv``);
- ``patch_weight`` (``sfumato.weight_patches``), which adds ``scale * delta`` to a layer's weight
  either merged into it (fused: no cost per step) or computed at every call (unfused), and takes
  it off again exactly, so several adapters of any type can change one layer.
"""

from __future__ import annotations

import contextvars
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, NamedTuple

from pydantic import Field

from .component import Component, ComponentSpec
from .errors import SfumatoError, SpecError
from .spec_paths import SpecPath

#: The module naming ``foreign_module_names`` understands, and what each means.
FOREIGN_FORMATS: dict[str, str] = {
    "diffusers": "the names diffusers (U-Net, VAE) and transformers (CLIP text model) give the same layers",
}


class AdapterTarget(NamedTuple):
    """Where a foreign module name lies in a sfumato component: ``module`` is a name of its
    ``named_modules()``; ``rows`` ``(start, stop)`` the output rows of that layer's weight the
    foreign layer is, when sfumato fuses several foreign layers into one (None: the whole layer)."""

    module: str
    rows: tuple[int, int] | None = None


class AdapterSpec(ComponentSpec):
    """Fields every adapter has: the file it loads and the name Python calls it by."""

    weights: SpecPath = Field(..., description="The adapter's file (.safetensors), relative to the spec file.")
    name: str | None = Field(
        None, description="What Python calls this adapter (pipe.set_adapter_scales({name: 0.5}), "
        "pipe.remove_adapter(name)). None: the file's name without its extension.")


class Adapter(Component, ABC):
    """A change to a pipeline's built components, applied after they are built and removable.

    ``apply(components)`` receives the pipeline's components by table (``denoiser``,
    ``text_encoder``, ...) and changes them; ``remove()`` restores them exactly. Problems with the
    file (unknown keys, another architecture) are ``WeightsError`` naming the file and listing
    the keys; ``apply`` checks everything before it changes anything.
    """

    kind: ClassVar[str] = "adapter"
    Spec: ClassVar[type[AdapterSpec]]

    def __init__(self, spec: AdapterSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        """The spec's ``name``, else the file's name without its extension."""
        return self.spec.name or Path(self.spec.weights).stem

    @abstractmethod
    def apply(self, components: Mapping[str, Any]) -> None:
        """Change ``components`` (the pipeline's, by table); nothing changes when it raises."""

    @abstractmethod
    def remove(self) -> None:
        """Undo ``apply`` exactly (the original weights, bit for bit)."""

    def set_scale(self, scale: float) -> None:
        """Change how strongly the adapter acts; types without a strength refuse."""
        raise SpecError(f"adapter {self.name!r} (type {self.type_name()!r}) has no scale to set")


def foreign_module_names(component: Any, format: str, table: str) -> Mapping[str, AdapterTarget]:
    """``component.foreign_module_names(format)``, or an error naming ``table`` and the type when
    the component offers no such naming."""
    offer = getattr(component, "foreign_module_names", None)
    names = offer(format) if callable(offer) else None
    if names is None:
        kind = getattr(getattr(component, "spec", None), "type", type(component).__name__)
        raise SpecError(f"[{table}] {kind!r} does not name its layers in the {format!r} format "
                        f"({FOREIGN_FORMATS.get(format, format)}), so this adapter cannot find its layers")
    return names


def check_scale(scale: Any, where: str) -> float:
    """A finite number, as an adapter's scale must be."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise SpecError(f"{where}: the scale must be a finite number, got {scale!r}")
    return float(scale)


def lora_option(text: str, registry: Any) -> dict[str, Any]:
    """The ``[[adapters]]`` table that ``sfumato generate --lora FILE[:SCALE]`` means: a ``lora``
    of ``FILE`` at ``SCALE`` (default 1). A ``:`` in an existing file's name is part of the name.
    The file is read (with the ``registry``'s ``lora`` type) so that a file that is no LoRA is
    refused before any work; whether it fits the model is known once the pipeline is built."""
    where = f"--lora {text}"
    path, colon, tail = text.rpartition(":")
    if not colon or Path(text).exists():
        path, tail = text, None
    scale = 1.0
    if tail is not None:
        try:
            number = float(tail)
        except ValueError:
            raise SpecError(f"{where}: the scale after ':' must be a number, such as {path}:0.7") from None
        scale = check_scale(number, where)
    if not path:
        raise SpecError(f"{where}: give a LoRA file, such as --lora style.safetensors:0.7")
    if Path(path).is_dir():
        raise SpecError(f"{where}: {path} is a folder; give the LoRA's .safetensors file")
    if not Path(path).is_file():
        raise SpecError(f"{where}: no such file: {path}")
    table = {"type": "lora", "weights": str(Path(path).resolve()), "scale": scale}
    try:
        registry.build("adapter", table)
    except SfumatoError as exc:  # the message names the file's full path, which --lora says already
        raise type(exc)(f"{where}: {str(exc).removeprefix(table['weights'] + ': ')}") from None
    return table


_EXTRA_ADAPTERS: contextvars.ContextVar[tuple[dict[str, Any], ...]] = contextvars.ContextVar(
    "sfumato_extra_adapters", default=())


@contextmanager
def extra_adapters(tables: list[dict[str, Any]]) -> Iterator[None]:
    """Within this block, every ``Pipeline`` built loads these ``[[adapters]]`` tables after its
    spec's own (and records them in its spec, so locks hold them): how ``sfumato generate
    --lora`` reaches the pipelines its paths build (a new spec, a replay, a prompt file)."""
    token = _EXTRA_ADAPTERS.set((*_EXTRA_ADAPTERS.get(), *tables))
    try:
        yield
    finally:
        _EXTRA_ADAPTERS.reset(token)


def pending_adapters() -> tuple[dict[str, Any], ...]:
    """The tables ``extra_adapters`` holds here (none outside it)."""
    return _EXTRA_ADAPTERS.get()
