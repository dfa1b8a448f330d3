"""The plugin registry: discovery, loading, validation of what plugins register, and lookup.

Discovery has one code path for every plugin, first-party or not, in this order:

1. the plugins named in the packaged ``registry.toml`` (source ``registry``);
2. the ``sfumato`` entry-point group of installed distributions (source ``entry-point``);
3. a ``registry.toml`` in the working directory, or the file given with ``--registry``
   (source ``local``): it may add local plugin modules and disable plugins by name.

``SFUMATO_DISABLE_PLUGINS`` (comma-separated names) disables plugins too. A plugin that fails to
import, targets another plugin API, or raises inside a hook is recorded as failed with its error
and skipped; everything it registered is rolled back and the other plugins load normally.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from . import hookspecs
from ._version import PLUGIN_API_VERSION, __version__
from .component import Component, spec_type_name
from .errors import PluginError, SpecError
from .interfaces import KINDS

Source = Literal["registry", "entry-point", "local"]
PACKAGED_REGISTRY = Path(__file__).with_name("registry.toml")
ENTRY_POINT_GROUP = "sfumato"


@dataclass
class PluginInfo:
    """One plugin as ``sfumato plugins`` shows it."""

    name: str
    module: str
    source: Source
    version: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "provides": self.provides,
            "hooks": self.hooks,
        }


@dataclass(frozen=True)
class Registered:
    """A registered component class and the plugin that registered it."""

    cls: type[Component]
    plugin: str


@dataclass(frozen=True)
class ModelEntry:
    """A named built-in model: a pipeline spec file shipped by a plugin."""

    name: str
    spec_path: Path
    description: str
    plugin: str


def read_manifest(path: Path) -> tuple[dict[str, str], list[str]]:
    """Read a ``registry.toml``: ``[plugins] name = "module"`` and ``disable = ["name", ...]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML: {exc}", source=str(path)) from exc
    plugins = data.get("plugins", {})
    disable = data.get("disable", [])
    unknown = set(data) - {"plugins", "disable"}
    if unknown or not isinstance(plugins, dict) or not isinstance(disable, list):
        raise SpecError(
            "a registry file has a [plugins] table mapping names to modules and an optional "
            f"disable = [names] list; found keys {sorted(data)}",
            source=str(path),
        )
    return {str(k): str(v) for k, v in plugins.items()}, [str(n) for n in disable]


class Registry:
    """Loads plugins and holds what they register.

    :param first_party: load the plugins named in the packaged ``registry.toml``.
    :param entry_points: load plugins from the ``sfumato`` entry-point group.
    :param local: a local ``registry.toml``; ``"auto"`` uses ``./registry.toml`` when it exists
        (and is not the packaged manifest itself), ``None`` skips it.
    :param disable: plugin names not to load (added to ``SFUMATO_DISABLE_PLUGINS``).
    """

    def __init__(
        self,
        *,
        first_party: bool = True,
        entry_points: bool = True,
        local: str | Path | None = "auto",
        disable: list[str] | None = None,
    ):
        self.pm = pluggy.PluginManager("sfumato")
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Registered]] = {kind: {} for kind in KINDS}
        self.models: dict[str, ModelEntry] = {}
        self._plugins: dict[str, PluginInfo] = {}
        self._pipeline_model: Any = None

        env = os.environ.get("SFUMATO_DISABLE_PLUGINS", "")
        self.disabled = {n.strip() for n in env.split(",") if n.strip()} | set(disable or [])
        local_path = self._local_registry_path(local)
        local_plugins: dict[str, str] = {}
        if local_path is not None:
            local_plugins, local_disable = read_manifest(local_path)
            self.disabled |= set(local_disable)
        if first_party:
            packaged, _ = read_manifest(PACKAGED_REGISTRY)
            for name, module in packaged.items():
                self.add_plugin(name, module, "registry")
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                version = ep.dist.version if ep.dist is not None else None
                self.add_plugin(ep.name, ep.value, "entry-point", loader=ep.load, version=version)
        for name, module in local_plugins.items():
            self.add_plugin(name, module, "local", base_dir=local_path.parent)

    @staticmethod
    def _local_registry_path(local: str | Path | None) -> Path | None:
        if local is None:
            return None
        if local == "auto":
            candidate = Path.cwd() / "registry.toml"
            if not candidate.is_file() or candidate.resolve() == PACKAGED_REGISTRY.resolve():
                return None
            return candidate
        path = Path(local)
        if not path.is_file():
            raise SpecError(f"registry file not found: {path}")
        return path

    # -- loading ------------------------------------------------------------------------------

    def add_plugin(
        self,
        name: str,
        module: str | ModuleType,
        source: Source,
        *,
        loader: Any = None,
        version: str | None = None,
        base_dir: Path | None = None,
    ) -> PluginInfo | None:
        """Import, check and register one plugin, recording failure instead of raising.

        ``module`` is a module object, a dotted module name, or (for local plugins) a path to a
        ``.py`` file relative to ``base_dir``. Returns None for a disabled plugin.
        """
        if name in self.disabled:
            return None
        module_name = module.__name__ if isinstance(module, ModuleType) else str(module)
        if name in self._plugins:
            other = self._plugins[name]
            info = PluginInfo(name, module_name, source, version, "failed",
                              f"a plugin named {name!r} is already loaded from {other.module} "
                              f"({other.source}); rename one of them")
            self._plugins[f"{name} ({source})"] = info
            return info
        info = PluginInfo(name, module_name, source, version)
        self._plugins[name] = info
        self._pipeline_model = None
        try:
            mod = module if isinstance(module, ModuleType) else (
                loader() if loader else _import(module_name, base_dir)
            )
            info.version = info.version or (
                __version__ if source == "registry" else getattr(mod, "__version__", None)
            )
            _check_api_version(mod)
            self.pm.register(mod, name=name)
        except Exception as exc:  # a broken plugin must never stop the others
            info.status, info.error = "failed", _describe(exc)
            return info
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            info.status, info.error = "failed", f"unknown hook: {exc}"
            return info
        info.hooks = sorted(
            {hook.name for hook in self.pm.get_hookcallers(mod) or []}
        )
        self._run_hooks(info, mod)
        return info

    def _run_hooks(self, info: PluginInfo, mod: ModuleType) -> None:
        staged_components: list[Registered] = []
        staged_models: list[ModelEntry] = []

        def register_component(cls: type) -> None:
            staged_components.append(self._validate_component(cls, info))

        def register_model(name: str, spec_path: str | Path, description: str = "") -> None:
            self._check_namespace(name, info, "model")
            staged_models.append(ModelEntry(name, Path(spec_path), description, info.name))

        calls = [("register_components", register_component), ("register_models", register_model)]
        try:
            for hook_name, callback in calls:
                impl = getattr(mod, hook_name, None)
                if hook_name in info.hooks and impl is not None:
                    impl(register=callback)
            for entry in staged_components:
                kind, type_name = entry.cls.kind, entry.cls.type_name()
                owner = self.components[kind].get(type_name)
                if owner is not None:
                    raise PluginError(
                        f"{kind} type {type_name!r} is registered by both plugin {owner.plugin!r} "
                        f"and plugin {info.name!r}"
                    )
            for entry in staged_models:
                if entry.name in self.models:
                    raise PluginError(
                        f"model {entry.name!r} is registered by both plugin "
                        f"{self.models[entry.name].plugin!r} and plugin {info.name!r}"
                    )
        except Exception as exc:
            self.pm.unregister(name=info.name)
            info.status, info.error, info.hooks = "failed", _describe(exc), []
            return
        for entry in staged_components:
            self.components[entry.cls.kind][entry.cls.type_name()] = entry
            info.provides.setdefault(entry.cls.kind, []).append(entry.cls.type_name())
        for entry in staged_models:
            self.models[entry.name] = entry
            info.provides.setdefault("model", []).append(entry.name)

    def _validate_component(self, cls: Any, info: PluginInfo) -> Registered:
        if not isinstance(cls, type) or not issubclass(cls, Component) or cls.kind not in KINDS:
            raise PluginError(
                f"register({cls!r}): expected a subclass of one of sfumato's interfaces "
                f"({', '.join(k.__name__ for k in KINDS.values())})"
            )
        spec_cls = getattr(cls, "Spec", None)
        from .component import ComponentSpec

        if not isinstance(spec_cls, type) or not issubclass(spec_cls, ComponentSpec):
            raise PluginError(f"{cls.__qualname__}.Spec must subclass sfumato.ComponentSpec")
        if getattr(cls, "__abstractmethods__", None):
            raise PluginError(
                f"{cls.__qualname__} does not implement {sorted(cls.__abstractmethods__)}"
            )
        type_name = spec_type_name(spec_cls)
        self._check_namespace(type_name, info, cls.kind)
        return Registered(cls, info.name)

    @staticmethod
    def _check_namespace(name: str, info: PluginInfo, what: str) -> None:
        if info.source != "registry" and "." not in name:
            raise PluginError(
                f"{what} name {name!r} must be namespaced, like '{info.name}.{name}': short names "
                "are reserved for first-party plugins"
            )

    # -- lookup -------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin that was not disabled, in load order, failed ones included."""
        return list(self._plugins.values())

    def failed(self) -> list[PluginInfo]:
        return [p for p in self._plugins.values() if p.status == "failed"]

    def types(self, kind: str) -> list[str]:
        """The registered type names of ``kind``, sorted."""
        return sorted(self.components[self._check_kind(kind)])

    def get(self, kind: str, type_name: str) -> type[Component]:
        """The class registered as ``type_name`` of ``kind``; a ``SpecError`` listing the valid
        choices (and any failed plugin that may have provided it) otherwise."""
        entries = self.components[self._check_kind(kind)]
        if type_name in entries:
            return entries[type_name].cls
        raise SpecError(self.unknown_type_message(kind, type_name))

    def unknown_type_message(self, kind: str, type_name: str) -> str:
        choices = ", ".join(repr(t) for t in sorted(self.components[kind])) or "none registered"
        message = f"unknown {kind} type {type_name!r}; valid choices: {choices}"
        failed = self.failed()
        namespace = type_name.split(".")[0] if "." in type_name else None
        culprit = [p for p in failed if p.name == namespace]
        for plugin in culprit or failed:
            message += f". Plugin {plugin.name!r} failed to load and may provide it: {plugin.error}"
        return message

    def build(self, kind: str, spec: Any, **context: Any) -> Component:
        """Build a component of ``kind`` from a spec dict (with ``type``) or a validated Spec."""
        if isinstance(spec, dict):
            if "type" not in spec:
                raise SpecError(f"{kind} spec has no 'type'; valid choices: {', '.join(self.types(kind))}")
            cls = self.get(kind, spec["type"])
            from .specs import validate_component

            spec = validate_component(cls, spec, where=f"[{kind}]")
        else:
            cls = self.get(kind, spec.type)
        try:
            return cls.from_spec(spec, **context)
        except Exception as exc:
            plugin = self.components[kind][spec.type].plugin
            raise PluginError(
                f"plugin {plugin!r} failed to build {kind} {spec.type!r}: {_describe(exc)}"
            ) from exc

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            choices = ", ".join(sorted(self.models)) or "none registered"
            message = f"unknown model {name!r}; valid choices: {choices}"
            for plugin in self.failed():
                message += f". Plugin {plugin.name!r} failed to load and may provide it: {plugin.error}"
            raise SpecError(message)
        return self.models[name]

    def commands(self, subparsers: Any, hook: str = "register_commands") -> None:
        """Let every plugin add CLI sub-commands through ``hook``; a plugin that raises is
        reported as failed, not fatal."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(cli=subparsers)
            except Exception as exc:
                info = self._plugins.get(impl.plugin_name)
                if info is not None:
                    info.status, info.error = "failed", f"in {hook}: {_describe(exc)}"

    def spec_from_checkpoint(self, path: Path) -> dict[str, Any] | None:
        """Ask the plugins to describe a foreign checkpoint (file or folder) as a spec dict."""
        return self.pm.hook.spec_from_checkpoint(path=Path(path))

    @staticmethod
    def _check_kind(kind: str) -> str:
        if kind not in KINDS:
            raise SpecError(f"unknown component kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return kind


def _import(module: str, base_dir: Path | None) -> ModuleType:
    if base_dir is not None and module.endswith(".py"):
        path = (base_dir / module).resolve()
        spec = importlib.util.spec_from_file_location(f"sfumato_local_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load plugin file {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    return importlib.import_module(module)


def _check_api_version(mod: ModuleType) -> None:
    declared = getattr(mod, "SFUMATO_PLUGIN_API", None)
    if declared is None:
        raise PluginError(
            f"module {mod.__name__} does not declare the plugin API it targets; add "
            f"SFUMATO_PLUGIN_API = {PLUGIN_API_VERSION}"
        )
    if declared != PLUGIN_API_VERSION:
        raise PluginError(
            f"targets sfumato plugin API {declared}, but this sfumato ({__version__}) provides "
            f"API {PLUGIN_API_VERSION}; install a version of the plugin made for it"
        )


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def set_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (None: reload lazily on next use); returns the old one."""
    global _default
    old, _default = _default, registry
    return old
