"""``Pipeline``: the components of a validated spec, built by the registry, on one device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .adapter import Adapter, check_scale, pending_adapters
from .component import Component
from .errors import PluginError, SfumatoError, SpecError
from .interfaces import Denoiser, Guidance, Speedup, Task
from .formulation import Formulation
from .registry import Registry, get_registry
from .specs import PipelineSpecBase, component_tables, list_tables, load_spec, validate_component
from .training import TrainingTask


class Pipeline:
    """Built components plus the spec they came from. Calling it runs the spec's task.

    Attributes are the spec's component tables (``text_encoder``, ``autoencoder``, ``denoiser``,
    ``scheduler``, ``task``, ...; None when the spec has no such table), ``guidance`` (a list, in
    spec order), ``speedups`` (a list of the ``[[speedups]]``, in spec order), ``adapters`` (a list
    of the applied ``[[adapters]]``, in order), ``schedule`` (the ``Formulation`` of
    ``[diffusion]``: a ``NoiseSchedule`` for the default variance-preserving one), ``device`` and
    ``dtype``. Tables plugins declare (``register_spec_tables``) are built after the core's: a
    single one is an attribute like theirs (``pipe.text_encoder_2``), a list one a list
    (``pipe.controlnet``, also in ``component_lists``).

    Adapters are applied after every component is built and placed on its device, in spec order;
    ``load_adapter``, ``set_adapter_scales`` and ``remove_adapter`` change them later, and keep
    ``spec.adapters`` in step so an image's lock records what made it.
    """

    def __init__(self, spec: PipelineSpecBase, registry: Registry | None = None, source: str | None = None):
        self.spec = spec
        self.source = source
        self.registry = registry or get_registry()
        runtime = spec.runtime
        self.device = runtime.torch_device()
        self.dtype = runtime.torch_dtype()
        adapters = [self._build_adapter(i, table) for i, table in enumerate(spec.adapters)]  # files read first
        self.components: dict[str, Component] = {}
        for table, kind in component_tables(self.registry).items():  # the core's, then plugins' tables
            table_spec = getattr(spec, table, None)
            if table_spec is None or table == "dataset":
                continue
            component = self.registry.build(kind, table_spec)
            if isinstance(component, nn.Module):
                component = self._place(component)
            self.components[table] = component
        #: The components of plugin-declared list tables (``register_spec_tables`` with ``many``).
        self.component_lists: dict[str, list[Component]] = {}
        for table, kind in list_tables(self.registry).items():
            if table in self.registry.spec_tables:
                built = [self.registry.build(kind, item) for item in getattr(spec, table)]
                self.component_lists[table] = [self._place(c) if isinstance(c, nn.Module) else c for c in built]
        self.guidance: list[Guidance] = [self.registry.build("guidance", g) for g in spec.guidance]
        self.speedups: list[Speedup] = [self.registry.build("speedup", s) for s in spec.speedups]
        self._refuse_untrained()
        self.schedule: Formulation | None = self.components.pop("diffusion", None)
        task = self.components.get("task")
        if isinstance(task, Task):
            missing = [name for name in task.required if self.component(name) is None]
            if missing:
                raise SpecError(
                    f"task {task.type_name()!r} needs the table(s) {', '.join(f'[{m}]' for m in missing)}",
                    source=source,
                )
        self.adapters: list[Adapter] = []
        for adapter in adapters:
            self._apply_adapter(adapter)
        for table in pending_adapters():
            self.load_adapter(**table)

    def _refuse_untrained(self) -> None:
        """A component that takes weights but names none would run from random initialisation and
        turn out noise that looks like a result: refuse it unless ``[runtime] allow_untrained``
        says so (or the task trains, and random weights are where it starts)."""
        if self.spec.runtime.allow_untrained or isinstance(self.components.get("task"), TrainingTask):
            return
        built = [(f"[{table}]", c) for table, c in self.components.items()]
        built += [(f"[[guidance]] #{i + 1}", g) for i, g in enumerate(self.guidance)]
        built += [(f"[[{table}]] #{i + 1}", c) for table, items in self.component_lists.items()
                  for i, c in enumerate(items)]
        untrained = [f"{where} {c.spec.type!r}" for where, c in built if needs_weights(c) and not c.spec.weights]
        if untrained:
            names = untrained[0] if len(untrained) == 1 else ", ".join(untrained[:-1]) + " and " + untrained[-1]
            verb, it, its = ("names", "it", "its") if len(untrained) == 1 else ("name", "they", "their")
            raise SpecError(f"{names} {verb} no weights, so {it} would run from random initialisation; set {its} "
                            "weights to trained ones, or [runtime] allow_untrained = true to run untrained on "
                            "purpose (tests, smoke runs)", source=self.source)

    # -- adapters ---------------------------------------------------------------------------------

    def load_adapter(self, weights: str | Path, type: str = "lora", **fields: Any) -> Adapter:
        """Apply an adapter file after those already applied and record it in ``spec.adapters``:
        ``pipe.load_adapter("style.safetensors", scale=0.7)``, ``pipe.load_adapter("cat.safetensors",
        type="textual-inversion", token="<cat>")``. ``fields`` are the type's spec fields
        (``scale``, ``targets``, ``fuse``, ``name``, ...). Returns the applied adapter."""
        where = f"[[adapters]] #{len(self.adapters) + 1}"
        cls = self.registry.get("adapter", type)
        table = {**fields, "type": type, "weights": str(Path(weights).resolve())}
        adapter_spec = validate_component(cls, table, where)
        adapter = self._apply_adapter(self._build_adapter(len(self.adapters), adapter_spec))
        self.spec = self.spec.model_copy(update={"adapters": [*self.spec.adapters, adapter_spec]})
        return adapter

    def set_adapter_scales(self, scales: Mapping[int | str, float]) -> None:
        """Set the scale of applied adapters, each named by its name or its index:
        ``pipe.set_adapter_scales({"style": 0.5, 1: 0.8})``. Fused LoRAs merge again from the
        kept original weights, so any sequence of scales ends exactly where it would start."""
        chosen = [(self._adapter_index(key), check_scale(scale, f"adapter {key!r}")) for key, scale in scales.items()]
        for index, scale in chosen:
            self.adapters[index].set_scale(scale)

    def remove_adapter(self, key: int | str | Adapter) -> None:
        """Take an applied adapter off (by name, index or the adapter itself): the weights it
        changed return bit for bit, and it leaves ``spec.adapters``."""
        index = self._adapter_index(key)
        self.adapters.pop(index).remove()
        self.spec = self.spec.model_copy(update={"adapters": [s for i, s in enumerate(self.spec.adapters) if i != index]})

    def _build_adapter(self, index: int, adapter_spec: Any) -> Adapter:
        """Build (and so read the file of) adapter ``index``; errors name its table."""
        try:
            return self.registry.build("adapter", adapter_spec)
        except SfumatoError as exc:
            raise type(exc)(f"[[adapters]] #{index + 1} {adapter_spec.type!r}: {exc}") from None

    def _apply_adapter(self, adapter: Adapter) -> Adapter:
        where = f"[[adapters]] #{len(self.adapters) + 1}"
        try:
            adapter.apply(self.components)
        except SfumatoError as exc:
            raise type(exc)(f"{where} {adapter.type_name()!r}: {exc}") from None
        except Exception as exc:
            plugin = self.registry.components["adapter"][adapter.type_name()].plugin
            raise PluginError(f"{where}: plugin {plugin!r} failed to apply adapter {adapter.type_name()!r} of "
                              f"{adapter.spec.weights}: {type(exc).__name__}: {exc}") from exc
        self.adapters.append(adapter)
        return adapter

    def _adapter_index(self, key: int | str | Adapter) -> int:
        """The index of the applied adapter ``key`` names; an error listing them otherwise."""
        names = [a.name for a in self.adapters]
        applied = ", ".join(f"{i}: {name!r}" for i, name in enumerate(names)) or "none"
        if isinstance(key, Adapter):
            found = [i for i, a in enumerate(self.adapters) if a is key]
        elif isinstance(key, int) and not isinstance(key, bool):
            found = [key] if 0 <= key < len(self.adapters) else []
        else:
            found = [i for i, name in enumerate(names) if name == key]
            if len(found) > 1:
                raise SpecError(f"adapter name {key!r} names {len(found)} adapters; give its index ({applied})")
        if not found:
            raise SpecError(f"no applied adapter {key!r}; applied adapters: {applied}")
        return found[0]

    def _place(self, module: nn.Module) -> nn.Module:
        runtime = self.spec.runtime
        module = module.to(device=self.device, dtype=self.dtype).eval()
        if runtime.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if hasattr(module, "set_attention_backend"):
            module.set_attention_backend(runtime.attention)
        if runtime.vae_tiling and hasattr(module, "enable_tiling"):
            module.enable_tiling()
        if runtime.vae_slicing and hasattr(module, "enable_slicing"):
            module.enable_slicing()
        if isinstance(module, Denoiser):
            runtime.compile_denoiser(module)  # its repeated blocks, or the whole forward
        return module

    @classmethod
    def load(
        cls,
        spec: str | Path | dict[str, Any] | PipelineSpecBase,
        overrides: list[str] | dict[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> Pipeline:
        """Build from a spec file, the name of a registered built-in model, a dict or a spec."""
        registry = registry or get_registry()
        if isinstance(spec, PipelineSpecBase):
            if overrides:
                spec = spec.to_dict()
            else:
                return cls(spec, registry)
        source = None
        if isinstance(spec, str) and not Path(spec).exists() and (spec in registry.models or _looks_like_a_name(spec)):
            spec = registry.model(spec).spec_path  # an unknown name: lists the models and any failed plugin
        if isinstance(spec, (str, Path)):
            source = str(spec)
            path = Path(spec)
            if path.is_dir() or (path.is_file() and path.suffix not in (".toml", ".json")):
                converted = registry.spec_from_checkpoint(path)
                if converted is None:
                    raise SpecError(f"{path}: not a spec file (.toml, .json), and no plugin recognises it as a "
                                    "checkpoint; the first-party plugins read diffusers Stable Diffusion 1.x folders "
                                    "(model_index.json) and SD 1.x single-file .safetensors checkpoints")
                spec = converted
        return cls(load_spec(spec, registry, overrides), registry, source=source)

    def component(self, table: str) -> Any:
        if table == "guidance":
            return self.guidance or None
        if table == "speedups":
            return self.speedups or None
        if table == "adapters":
            return self.adapters or None
        if table in self.component_lists:
            return self.component_lists[table] or None
        if table == "diffusion":
            return self.schedule
        return self.components.get(table)

    def __getattr__(self, name: str) -> Any:
        registry = self.__dict__.get("registry")
        if name in component_tables(registry):
            return self.__dict__.get("components", {}).get(name)
        if name in list_tables(registry) and name in self.__dict__.get("component_lists", {}):
            return self.__dict__["component_lists"][name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task = self.components.get("task")
        if task is None:
            raise SpecError("this pipeline's spec has no task; set task = \"text-to-image\" (or another "
                            f"registered task: {', '.join(self.registry.types('task'))})", source=self.source)
        with self.spec.runtime.call_context(self.device):
            return task.run(self, *args, **kwargs)

    def __repr__(self) -> str:
        parts = [f"{t}={type(c).__name__}" for t, c in self.components.items()]
        parts += [f"guidance=[{', '.join(type(g).__name__ for g in self.guidance)}]"] if self.guidance else []
        parts += [f"speedups=[{', '.join(type(s).__name__ for s in self.speedups)}]"] if self.speedups else []
        parts += [f"adapters=[{', '.join(repr(a.name) for a in self.adapters)}]"] if self.adapters else []
        return f"Pipeline({', '.join(parts)}, device={self.device}, dtype={self.dtype})"


def needs_weights(component: Component) -> bool:
    """Whether ``component`` has trained parameters that its spec's ``weights`` field loads."""
    return (
        "weights" in type(component.spec).model_fields
        and isinstance(component, nn.Module)
        and any(True for _ in component.parameters())
    )


def _looks_like_a_name(text: str) -> bool:
    """``"shapes"`` is a model name; ``"specs/x.toml"`` or ``"x.toml"`` is a path."""
    return "/" not in text and "\\" not in text and not Path(text).suffix
