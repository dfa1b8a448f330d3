"""The plugin registry: discovery, loading, validation of what plugins register, and lookup.

Discovery has one code path for every plugin, first-party or not, in this order:

1. the plugins named in the packaged ``registry.toml`` (source ``registry``);
2. the ``sfumato`` entry-point group of installed distributions (source ``entry-point``);
3. the local registry file given with ``--registry FILE`` or ``SFUMATO_REGISTRY=FILE`` (source
   ``local``): it may add local plugin modules and disable plugins by name. A ``registry.toml``
   in the working directory is never loaded on its own (see ``local_plugins``).

``SFUMATO_DISABLE_PLUGINS`` (comma-separated names) disables plugins too. A plugin that fails to
import (whatever it raises, ``SystemExit`` included), targets another plugin API, registers a
malformed name or raises inside a hook is recorded as failed with its error and skipped;
everything it registered is rolled back and the other plugins load normally. Hooks called later
(``spec_from_checkpoint``, ``register_commands``) name the plugin that raised, and the others
still answer.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from . import hookspecs
from ._version import __version__
from .component import Component, spec_type_name
from .errors import PluginError, SfumatoError, SpecError
from .interfaces import KINDS
from .local_plugins import import_local, local_registry_path, read_manifest
from .noise_schedule import NoiseSchedule
from .plugin_rules import check_api_version, check_name

Source = Literal["registry", "entry-point", "local"]
PACKAGED_REGISTRY = Path(__file__).with_name("registry.toml")
ENTRY_POINT_GROUP = "sfumato"


@dataclass
class PluginInfo:
    """One plugin as ``sfumato plugins`` shows it.

    ``failed_in`` is the hook the plugin failed in (None when it failed at import, or did not
    fail): a plugin that failed in ``register_models`` may have provided any model name.
    """

    name: str
    module: str
    source: Source
    version: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    failed_in: str | None = None

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
class SamplerAlias:
    """A name another tool gives a sampler or sigma schedule, and the ``[scheduler]`` fields it
    stands for (``register_sampler_aliases``)."""

    name: str
    table: dict[str, Any]
    plugin: str

    @property
    def is_sampler(self) -> bool:
        """A sampler's name (its table has a ``type``), not a sigma schedule's."""
        return "type" in self.table


@dataclass(frozen=True)
class SpecTable:
    """A spec table a plugin declared (``register_spec_tables``): ``[table]`` (or ``[[table]]``
    when ``many``) holding a component of ``kind``."""

    table: str
    kind: str
    many: bool
    description: str
    plugin: str


@dataclass(frozen=True)
class ModelEntry:
    """A named built-in model: a pipeline spec file shipped by a plugin."""

    name: str
    spec_path: Path
    description: str
    plugin: str


class Registry:
    """Loads plugins and holds what they register.

    :param first_party: load the plugins named in the packaged ``registry.toml``.
    :param entry_points: load plugins from the ``sfumato`` entry-point group.
    :param local: a local registry file; ``"auto"`` uses the file named by ``SFUMATO_REGISTRY``
        when it is set, ``None`` loads none. Loading one runs its plugins' code, so a
        ``registry.toml`` in the working directory is never used unless named.
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
        #: Spec tables plugins declared (``register_spec_tables``), by table name, in load order.
        self.spec_tables: dict[str, SpecTable] = {}
        #: The interface class of each kind a plugin declared (a kind beyond ``KINDS``).
        self.kind_bases: dict[str, type[Component]] = {}
        #: Sampler and sigma schedule names of other tools, by their normalised spelling.
        self.sampler_aliases: dict[str, SamplerAlias] = {}
        self.schedule_aliases: dict[str, SamplerAlias] = {}
        self._plugins: dict[str, PluginInfo] = {}
        self._packages: dict[str, str] = {}  # import package -> the plugin whose code it is
        self._pipeline_model: Any = None

        env = os.environ.get("SFUMATO_DISABLE_PLUGINS", "")
        self.disabled = {n.strip() for n in env.split(",") if n.strip()} | set(disable or [])
        #: The local registry file that was loaded, if any.
        self.local_path = local_registry_path(local)
        local_plugins: dict[str, str] = {}
        if self.local_path is not None:
            local_plugins, local_disable = read_manifest(self.local_path)
            self.disabled |= set(local_disable)
        # The default formulation is the core's own: every spec whose [diffusion] states no type
        # uses it, so every registry has it, test registries included.
        self.components["formulation"][NoiseSchedule.type_name()] = Registered(NoiseSchedule, "sfumato")
        if first_party:
            packaged, _ = read_manifest(PACKAGED_REGISTRY)
            for name, module in packaged.items():
                self.add_plugin(name, module, "registry")
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                version = ep.dist.version if ep.dist is not None else None
                self.add_plugin(ep.name, ep.value, "entry-point", loader=ep.load, version=version)
        for name, module in local_plugins.items():
            self.add_plugin(name, module, "local", base_dir=self.local_path.parent)

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

        ``module`` is a module object, a dotted module name, or (for local plugins) a module or
        ``.py`` file found in ``base_dir``, the local registry file's folder. Whatever the
        plugin raises, ``SystemExit`` included, fails only that plugin; an interrupt (Ctrl-C)
        still stops. Returns None for a disabled plugin.
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
            if isinstance(module, ModuleType):
                mod = module
            elif loader is not None:
                mod = loader()
            elif base_dir is not None:
                mod = import_local(module_name, base_dir)
            else:
                mod = importlib.import_module(module_name)
            info.version = info.version or (
                __version__ if source == "registry" else getattr(mod, "__version__", None)
            )
            check_api_version(mod, module_name)
            self.pm.register(mod, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin must never stop the others
            info.status, info.error = "failed", _describe(exc)
            return info
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            info.status, info.error = "failed", f"unknown hook: {exc}"
            return info
        package = _package_of(mod)
        if package is not None:
            self._packages[package] = name
        info.hooks = sorted(
            {hook.name for hook in self.pm.get_hookcallers(mod) or []}
        )
        self._run_hooks(info, mod)
        return info

    def _run_hooks(self, info: PluginInfo, mod: ModuleType) -> None:
        staged_components: list[Registered] = []
        staged_models: list[ModelEntry] = []
        staged_aliases: list[SamplerAlias] = []
        staged_tables: list[SpecTable] = []
        staged_kinds: dict[str, type[Component]] = {}

        def register_table(table: str, kind: str | type, many: bool = False, description: str = "") -> None:
            staged_tables.append(self._validate_table(table, kind, many, description, info, staged_tables,
                                                      staged_kinds))

        def register_component(cls: type) -> None:
            staged_components.append(self._validate_component(cls, info, staged_kinds))

        def register_model(name: str, spec_path: str | Path, description: str = "") -> None:
            check_name(name, info.name, info.source == "registry", "model", self._plugins)
            staged_models.append(ModelEntry(name, Path(spec_path), description, info.name))

        def register_alias(name: str, table: dict[str, Any]) -> None:
            staged_aliases.append(_checked_alias(name, table, info.name))

        calls = [("register_spec_tables", register_table), ("register_components", register_component), ("register_models", register_model),
                 ("register_sampler_aliases", register_alias)]
        try:
            for hook_name, callback in calls:
                impl = getattr(mod, hook_name, None)
                if hook_name in info.hooks and impl is not None:
                    info.failed_in = hook_name
                    impl(register=callback)
            info.failed_in = "register_components"
            for entry in staged_components:
                kind, type_name = entry.cls.kind, entry.cls.type_name()
                owner = self.components.get(kind, {}).get(type_name)
                if owner is not None:
                    raise PluginError(
                        f"{kind} type {type_name!r} is registered by both plugin {owner.plugin!r} "
                        f"and plugin {info.name!r}"
                    )
            info.failed_in = "register_models"
            for entry in staged_models:
                if entry.name in self.models:
                    raise PluginError(
                        f"model {entry.name!r} is registered by both plugin "
                        f"{self.models[entry.name].plugin!r} and plugin {info.name!r}"
                    )
            info.failed_in = "register_sampler_aliases"
            staged: dict[tuple[bool, str], SamplerAlias] = {}
            for alias in staged_aliases:
                key = (alias.is_sampler, _name_key(alias.name))
                known = self._aliases(alias.is_sampler).get(key[1]) or staged.get(key)
                if known is not None and known.table != alias.table:
                    raise PluginError(f"sampler name {alias.name!r} is registered as {known.table} by plugin "
                                      f"{known.plugin!r} and as {alias.table} by plugin {info.name!r}")
                staged[key] = alias
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.pm.unregister(name=info.name)
            info.status, info.hooks = "failed", []
            info.error = f"in {info.failed_in}: {_describe(exc)}"
            return
        info.failed_in = None
        for kind, base in staged_kinds.items():
            self.kind_bases[kind] = base
            self.components[kind] = {}
        for entry in staged_tables:
            self.spec_tables[entry.table] = entry
            info.provides.setdefault("spec table", []).append(entry.table)
        for entry in staged_components:
            self.components[entry.cls.kind][entry.cls.type_name()] = entry
            info.provides.setdefault(entry.cls.kind, []).append(entry.cls.type_name())
        for entry in staged_models:
            self.models[entry.name] = entry
            info.provides.setdefault("model", []).append(entry.name)
        for alias in staged_aliases:
            self._aliases(alias.is_sampler)[_name_key(alias.name)] = alias

    def _validate_table(self, table: Any, kind: Any, many: Any, description: Any, info: PluginInfo,
                        staged: list[SpecTable], staged_kinds: dict[str, type[Component]]) -> SpecTable:
        """A ``register_spec_tables`` registration, or a ``PluginError`` saying what is wrong."""
        from .specs import core_table_names

        if not isinstance(table, str) or not table or not (table[0].isalpha() and table.isascii()
                                                            and table.replace("_", "a").isalnum() and table.islower()):
            raise PluginError(f"register({table!r}, ...): a spec table name is lowercase letters, digits and '_', "
                              "starting with a letter (text_encoder_2)")
        if table in core_table_names():
            raise PluginError(f"register({table!r}, ...): [{table}] is a table of the core spec")
        owner = self.spec_tables.get(table) or next((t for t in staged if t.table == table), None)
        if owner is not None:
            raise PluginError(f"spec table [{table}] is declared by both plugin {owner.plugin!r} and plugin {info.name!r}")
        if isinstance(kind, type):
            name = getattr(kind, "kind", None)
            if not issubclass(kind, Component) or not isinstance(name, str) or not name:
                raise PluginError(f"register({table!r}, {kind!r}): a kind class subclasses sfumato.Component and "
                                  "names its kind in a 'kind' class attribute")
            known = self.kind_bases.get(name) or staged_kinds.get(name) or KINDS.get(name)
            if known is not None and known is not kind:
                raise PluginError(f"register({table!r}, {kind.__qualname__}): kind {name!r} is already "
                                  f"{known.__qualname__}'s")
            if known is None:
                staged_kinds[name] = kind
            kind = name
        elif not isinstance(kind, str) or kind not in {*self.components, *staged_kinds}:
            raise PluginError(f"register({table!r}, {kind!r}): unknown kind; give a kind name "
                              f"({', '.join(self.components)}) or the interface class of a new kind")
        if not isinstance(many, bool) or not isinstance(description, str):
            raise PluginError(f"register({table!r}, ...): many is True or False and description a string")
        return SpecTable(table, kind, many, description, info.name)

    def _validate_component(self, cls: Any, info: PluginInfo,
                            staged_kinds: dict[str, type[Component]] | None = None) -> Registered:
        kinds = {**KINDS, **self.kind_bases, **(staged_kinds or {})}
        if not isinstance(cls, type) or not issubclass(cls, Component) or cls.kind not in kinds:
            raise PluginError(
                f"register({cls!r}): expected a subclass of one of sfumato's interfaces "
                f"({', '.join(k.__name__ for k in kinds.values())})"
            )
        spec_cls = getattr(cls, "Spec", None)
        from .component import ComponentSpec

        if not isinstance(spec_cls, type) or not issubclass(spec_cls, ComponentSpec):
            raise PluginError(f"{cls.__qualname__}.Spec must subclass sfumato.ComponentSpec")
        if getattr(cls, "__abstractmethods__", None):
            raise PluginError(
                f"{cls.__qualname__} does not implement {sorted(cls.__abstractmethods__)}"
            )
        first_party = info.source == "registry"
        check_name(spec_type_name(spec_cls), info.name, first_party, f"{cls.kind} type", self._plugins)
        return Registered(cls, info.name)

    # -- lookup -------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin that was not disabled, in load order, failed ones included."""
        return list(self._plugins.values())

    def failed(self) -> list[PluginInfo]:
        return [p for p in self._plugins.values() if p.status == "failed"]

    def plugin_of_module(self, module_name: str) -> str | None:
        """The plugin whose code the module ``module_name`` is: the plugin's module, or any module
        of the package that module is in (``sfumato_clip.model`` -> ``clip``); None for modules of
        no plugin. The command line uses it to name the plugin in whose code an error was raised.
        """
        owners = [(package, plugin) for package, plugin in self._packages.items()
                  if module_name == package or module_name.startswith(package + ".")]
        return max(owners, key=lambda owner: len(owner[0]))[1] if owners else None

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

    def unknown_type_message(self, kind: str, type_name: str, extra_choices: tuple[str, ...] = (),
                             what: str | None = None) -> str:
        """The message for an unknown ``type_name`` of ``kind``: the valid choices (``extra_choices``
        first: values a field accepts besides the registered names, such as ``"default"``), the
        close ones, and the failed plugins that could have provided it."""
        choices = [*extra_choices, *sorted(self.components[kind])]
        listed = ", ".join(repr(t) for t in choices) or "none registered"
        return self._unknown(what or f"{kind} type", type_name, choices, listed, "register_components")

    def _unknown(self, what: str, name: str, choices: list[str], listed: str, hook: str) -> str:
        """The message for an unknown type or model ``name``: the valid choices, the close ones,
        and the failed plugins that could have provided it (with their errors); other failed
        plugins are only counted, so a typo of a first-party name is not buried in their errors."""
        message = f"unknown {what} {name!r}; valid choices: {listed}"
        close = difflib.get_close_matches(name, choices, n=3)
        if close:
            message += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
        failed = self.failed()
        culprits = [p for p in failed if self._could_provide(p, name, hook)]
        notes = [f"Plugin {p.name!r} failed to load and may provide it: {p.error}" for p in culprits]
        others = len(failed) - len(culprits)
        if others:
            plural = "s" if others > 1 else ""
            notes.append(f"{others} {'other ' if culprits else ''}plugin{plural} failed to load; "
                         "`sfumato plugins` shows why")
        return ". ".join([message] + notes)

    def _could_provide(self, plugin: PluginInfo, name: str, hook: str) -> bool:
        """Whether the failed ``plugin`` could have provided ``name``: a namespaced name belongs to
        the plugin of that name; a plugin that failed in ``hook`` (its registrations rolled back)
        may have registered anything; a short name could only come from a first-party plugin."""
        namespace = name.rpartition(".")[0]
        if namespace and namespace in self._plugins:
            return plugin.name == namespace
        return plugin.failed_in == hook or (not namespace and plugin.source == "registry")

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
        except (KeyboardInterrupt, SfumatoError):
            raise  # an error raised on purpose already says what was wrong and where
        except BaseException as exc:
            plugin = self.components[kind][spec.type].plugin
            raise PluginError(
                f"plugin {plugin!r} failed to build {kind} {spec.type!r}: {_describe(exc)}"
            ) from exc

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            choices = sorted(self.models)
            raise SpecError(self._unknown("model", name, choices, ", ".join(choices) or "none registered",
                                          "register_models"))
        return self.models[name]

    def resolve_sampler(self, name: str, schedule: str | None = None) -> dict[str, Any]:
        """The ``[scheduler]`` fields a sampler name stands for: ``{"type": ...}`` plus any fields
        the name implies, and ``sigmas`` when it names a schedule.

        ``name`` is a scheduler type (``dpmpp-2m``) or a name registered with
        ``register_sampler_aliases`` (ComfyUI's ``dpmpp_2m``, the WebUI's "DPM++ 2M"), optionally
        followed by a sigma schedule's name or alias: "DPM++ 2M Karras", "dpmpp_2m karras". A
        separate ``schedule`` (``--schedule karras``) is added the same way. Case and runs of
        spaces do not matter. Raises a ``SpecError`` naming ``[scheduler]`` for an unknown name
        or two different schedules.
        """
        key = _name_key(name)
        table = self._sampler_fields(key) or self._sampler_then_schedule(key)
        if table is None:
            raise SpecError(
                f"[scheduler]: unknown sampler name {name!r}{self._close_names(name, True)}; give a scheduler type "
                f"({', '.join(sorted(self.components['scheduler']))}) or a name other tools give a sampler (ComfyUI's "
                "sampler_name, the WebUI's sampler names), optionally followed by a sigma schedule (karras, "
                "exponential, ...); docs/schedulers.md lists them"
            )
        if schedule is not None:
            sigmas = self._schedule_fields(_name_key(schedule))
            if sigmas is None:
                raise SpecError(
                    f"[scheduler]: unknown sigma schedule {schedule!r}{self._close_names(schedule, False)}; valid: "
                    f"default, {', '.join(sorted(self.components['sigmas']))} or a name other tools give one "
                    "(ComfyUI's scheduler, the WebUI's schedule types)"
                )
            if table.get("sigmas", sigmas["sigmas"]) != sigmas["sigmas"]:
                raise SpecError(f"[scheduler]: sampler name {name!r} already chooses sigmas = {table['sigmas']!r} and "
                                f"the schedule {schedule!r} asks for {sigmas['sigmas']!r}; give one of them")
            table = {**table, **sigmas}
        return table

    def _aliases(self, samplers: bool) -> dict[str, SamplerAlias]:
        return self.sampler_aliases if samplers else self.schedule_aliases

    def _sampler_fields(self, key: str) -> dict[str, Any] | None:
        """The fields of a normalised sampler name: a scheduler type's, else an alias's."""
        for type_name in self.components["scheduler"]:
            if type_name.casefold() == key:
                return {"type": type_name}
        alias = self.sampler_aliases.get(key)
        return dict(alias.table) if alias is not None else None

    def _sampler_then_schedule(self, key: str) -> dict[str, Any] | None:
        """The fields of a normalised sampler name followed by a schedule name ("dpm++ 2m karras"),
        split at the last space where both halves are known names."""
        words = key.split(" ")
        for cut in range(len(words) - 1, 0, -1):
            sampler, sigmas = self._sampler_fields(" ".join(words[:cut])), self._schedule_fields(" ".join(words[cut:]))
            if sampler is not None and sigmas is not None and "sigmas" not in sampler:
                return {**sampler, **sigmas}
        return None

    def _schedule_fields(self, key: str) -> dict[str, Any] | None:
        """``{"sigmas": ...}`` of a normalised schedule name: ``default`` or a sigma schedule
        type, else an alias's."""
        for type_name in ("default", *self.components["sigmas"]):
            if type_name.casefold() == key:
                return {"sigmas": type_name}
        alias = self.schedule_aliases.get(key)
        return dict(alias.table) if alias is not None else None

    def _close_names(self, name: str, samplers: bool) -> str:
        """`` (did you mean ...?)`` with the known names closest to ``name``, or ""."""
        types = self.components["scheduler" if samplers else "sigmas"]
        names = {_name_key(known): known for known in (*(a.name for a in self._aliases(samplers).values()), *types)}
        close = difflib.get_close_matches(_name_key(name), list(names), n=3, cutoff=0.6)
        return f" (did you mean {' or '.join(repr(names[key]) for key in close)}?)" if close else ""

    def commands(self, subparsers: Any, hook: str = "register_commands") -> None:
        """Let every plugin add CLI sub-commands through ``hook``; a plugin that raises (even
        ``SystemExit``) is recorded as failed with the hook's name, not fatal."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                _call(impl, cli=subparsers)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                info = self._plugins.get(impl.plugin_name)
                if info is not None:
                    info.status, info.failed_in = "failed", hook
                    info.error = f"in {hook}: {_describe(exc)}"

    def spec_from_checkpoint(self, path: Path) -> dict[str, Any] | None:
        """Ask the plugins, in hook order, to describe a foreign checkpoint (file or folder) as a
        spec dict; the first answer wins, None when no plugin recognises it.

        A ``SfumatoError`` is a plugin's answer (a recognised but broken checkpoint) and
        propagates. Anything else a plugin raises is its own bug: the plugin is skipped, with a
        warning naming it when another plugin answers, and when none does a ``PluginError``
        names every plugin that raised.
        """
        failures = []
        for impl in reversed(self.pm.hook.spec_from_checkpoint.get_hookimpls()):
            try:
                answer = _call(impl, path=Path(path))
            except (SfumatoError, KeyboardInterrupt):
                raise
            except BaseException as exc:
                failures.append(f"plugin {impl.plugin_name!r} raised in spec_from_checkpoint: {_describe(exc)}")
                continue
            if answer is not None:
                for failure in failures:
                    warnings.warn(f"{path}: {failure}; skipped it", RuntimeWarning, stacklevel=2)
                return answer
        if failures:
            raise PluginError(f"{path}: no plugin read it as a checkpoint; " + "; ".join(failures))
        return None

    def _check_kind(self, kind: str) -> str:
        if kind not in self.components:
            raise SpecError(f"unknown component kind {kind!r}; valid kinds: {', '.join(self.components)}")
        return kind


def _name_key(name: str) -> str:
    """How sampler names are compared: case-folded, runs of whitespace as one space."""
    return " ".join(str(name).casefold().split())


def _checked_alias(name: Any, table: Any, plugin: str) -> SamplerAlias:
    """A ``register_sampler_aliases`` registration, or a ``PluginError`` saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise PluginError(f"register({name!r}, ...): a sampler name must be a non-empty string")
    if not isinstance(table, dict) or not all(isinstance(key, str) for key in table):
        raise PluginError(f"register({name!r}, {table!r}): the table must be a dict of [scheduler] fields")
    if "type" in table:
        if not isinstance(table["type"], str):
            raise PluginError(f"register({name!r}, {table!r}): 'type' must be a scheduler type name")
    elif set(table) != {"sigmas"}:
        raise PluginError(f"register({name!r}, {table!r}): a table names a sampler ('type', with any fields) "
                          "or a sigma schedule ('sigmas' only)")
    return SamplerAlias(name, dict(table), plugin)


def _call(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one plugin's implementation of a hook with the arguments it asks for, as pluggy does."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def _package_of(plugin: Any) -> str | None:
    """The import package holding a plugin's code: the plugin module's package, or the module
    itself when it is top-level. sfumato's own modules are never a plugin's package."""
    if isinstance(plugin, ModuleType):
        module_name, package = plugin.__name__, plugin.__package__ or plugin.__name__
    else:  # an object an entry point names: the package of the module that defines it
        module_name = getattr(plugin, "__module__", None)
        module = sys.modules.get(module_name) if isinstance(module_name, str) else None
        if module is None:
            return None
        package = module.__package__ or module_name
    if package == "sfumato" or package.startswith("sfumato."):
        return module_name
    return package


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line being the innermost one outside sfumato's own
    code: for an error sfumato raises about a plugin, the plugin's line that caused it."""
    core = str(Path(__file__).parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith((core, "<frozen "))]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = str(exc)
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


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
