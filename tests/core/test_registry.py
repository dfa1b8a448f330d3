"""Plugin discovery and registration: failures are isolated, duplicates and namespaces enforced."""

from __future__ import annotations

import textwrap
import types

import pytest

import sfumato
import sfumato_test_doubles
from sfumato import Registry

PLUGIN_HEADER = """
from typing import Literal
import sfumato
from pydantic import Field

SFUMATO_PLUGIN_API = 1
"""

SCHEDULER = PLUGIN_HEADER + """
class Karras(sfumato.Scheduler):
    class Spec(sfumato.ComponentSpec):
        type: Literal["{name}"] = "{name}"
        steps: int = Field(20, description="steps")
        rho: float = Field(7.0, description="Karras rho")

    def __init__(self, spec):
        self.spec = spec

    def plan(self, schedule, steps=None, strength=1.0):
        raise NotImplementedError

    def step(self, model, x, plan, i, carry=None, noise=None):
        raise NotImplementedError

@sfumato.hookimpl
def register_components(register):
    register(Karras)
"""


def write_plugin(tmp_path, module: str, source: str) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))


def local_registry(tmp_path, plugins: dict[str, str], disable: list[str] = ()) -> Registry:
    lines = ["[plugins]"] + [f'{name} = "{module}"' for name, module in plugins.items()]
    lines.append(f"disable = {list(disable)!r}".replace("'", '"'))
    # `disable` must precede tables in TOML
    text = lines[-1] + "\n" + "\n".join(lines[:-1]) + "\n"
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return Registry(first_party=False, entry_points=False, local=path)


def test_local_plugin_module_is_loaded_and_its_types_registered(tmp_path):
    write_plugin(tmp_path, "acme_local", SCHEDULER.format(name="acme.karras"))
    registry = local_registry(tmp_path, {"acme": "acme_local"})
    [info] = registry.plugins()
    assert (info.name, info.source, info.status, info.error) == ("acme", "local", "ok", None)
    assert info.provides == {"scheduler": ["acme.karras"]}
    assert registry.types("scheduler") == ["acme.karras"]
    scheduler = registry.build("scheduler", {"type": "acme.karras", "rho": 3})
    assert scheduler.spec.rho == 3.0


def test_a_plugin_failing_at_import_is_named_and_skipped(tmp_path):
    write_plugin(tmp_path, "broken_import", "raise RuntimeError('boom at import')\n")
    write_plugin(tmp_path, "acme_local", SCHEDULER.format(name="acme.karras"))
    registry = local_registry(tmp_path, {"broken": "broken_import", "acme": "acme_local"})
    by_name = {p.name: p for p in registry.plugins()}
    assert by_name["broken"].status == "failed"
    assert "RuntimeError: boom at import" in by_name["broken"].error
    assert by_name["acme"].status == "ok"


def test_a_plugin_raising_in_its_hook_is_rolled_back(tmp_path):
    source = SCHEDULER.format(name="bad.karras").replace(
        "    register(Karras)", "    register(Karras)\n    raise ValueError('hook exploded')"
    )
    write_plugin(tmp_path, "bad_hook", source)
    registry = local_registry(tmp_path, {"bad": "bad_hook"})
    [info] = registry.plugins()
    assert info.status == "failed" and "ValueError: hook exploded" in info.error
    assert registry.types("scheduler") == []  # what it registered before raising is gone


def test_using_a_failed_plugins_type_names_the_plugin_and_its_error(tmp_path):
    write_plugin(tmp_path, "broken_import", "raise RuntimeError('boom at import')\n")
    registry = local_registry(tmp_path, {"acme": "broken_import"})
    with pytest.raises(sfumato.SpecError, match=r"Plugin 'acme' failed to load.*boom at import"):
        registry.build("scheduler", {"type": "acme.karras"})


def test_plugin_api_mismatch_is_refused_clearly(tmp_path):
    write_plugin(tmp_path, "future", SCHEDULER.format(name="f.k").replace("SFUMATO_PLUGIN_API = 1", "SFUMATO_PLUGIN_API = 99"))
    write_plugin(tmp_path, "undeclared", SCHEDULER.format(name="u.k").replace("SFUMATO_PLUGIN_API = 1", ""))
    registry = local_registry(tmp_path, {"f": "future", "u": "undeclared"})
    by_name = {p.name: p for p in registry.plugins()}
    assert by_name["f"].status == "failed" and "targets sfumato plugin API 99" in by_name["f"].error
    assert by_name["u"].status == "failed" and "SFUMATO_PLUGIN_API = 1" in by_name["u"].error


def test_duplicate_type_names_are_an_error_naming_both_plugins(tmp_path):
    write_plugin(tmp_path, "one", SCHEDULER.format(name="acme.karras"))
    write_plugin(tmp_path, "two", SCHEDULER.format(name="acme.karras"))
    registry = local_registry(tmp_path, {"first": "one", "second": "two"})
    by_name = {p.name: p for p in registry.plugins()}
    assert by_name["first"].status == "ok"
    assert by_name["second"].status == "failed"
    assert "'first'" in by_name["second"].error and "'second'" in by_name["second"].error


def test_third_party_type_names_must_be_namespaced(tmp_path):
    write_plugin(tmp_path, "short", SCHEDULER.format(name="karras"))
    registry = local_registry(tmp_path, {"short": "short"})
    [info] = registry.plugins()
    assert info.status == "failed" and "must be namespaced" in info.error


def test_misspelt_hook_is_reported(tmp_path):
    write_plugin(tmp_path, "typo", PLUGIN_HEADER + "\n@sfumato.hookimpl\ndef register_component(register):\n    pass\n")
    registry = local_registry(tmp_path, {"typo": "typo"})
    [info] = registry.plugins()
    assert info.status == "failed" and "unknown hook" in info.error


def test_disable_by_local_file_and_by_environment(tmp_path, monkeypatch):
    write_plugin(tmp_path, "dis_one", SCHEDULER.format(name="a.k"))
    write_plugin(tmp_path, "dis_two", SCHEDULER.format(name="b.k"))
    registry = local_registry(tmp_path, {"a": "dis_one", "b": "dis_two"}, disable=["a"])
    assert [p.name for p in registry.plugins()] == ["b"]
    monkeypatch.setenv("SFUMATO_DISABLE_PLUGINS", "b, a")
    registry = local_registry(tmp_path, {"a": "dis_one", "b": "dis_two"})
    assert registry.plugins() == []


def test_registering_something_that_is_not_a_component_fails_the_plugin():
    module = types.ModuleType("weird")
    module.SFUMATO_PLUGIN_API = 1
    module.register_components = sfumato.hookimpl(lambda register: register(dict))
    registry = Registry(first_party=False, entry_points=False, local=None)
    info = registry.add_plugin("weird", module, "local")
    assert info.status == "failed" and "expected a subclass of one of sfumato's interfaces" in info.error


def test_first_party_plugins_come_from_the_packaged_manifest():
    registry = Registry(entry_points=False, local=None)
    manifest, _ = sfumato.registry.read_manifest(sfumato.registry.PACKAGED_REGISTRY)
    assert [p.name for p in registry.plugins()] == list(manifest)
    assert all(p.source == "registry" for p in registry.plugins())
    failed = [(p.name, p.error) for p in registry.plugins() if p.status != "ok"]
    assert not failed


def test_plugin_info_json_has_the_documented_fields(doubles):
    [info] = doubles.plugins()
    data = info.to_json()
    assert set(data) >= {"name", "version", "source", "status", "error", "provides"}
    assert data["provides"]["scheduler"] == ["test.ddim", "test.noisy"]


def test_build_wraps_a_component_error_with_the_plugin_name(doubles, monkeypatch):
    def explode(self, spec):
        raise RuntimeError("no memory")
    monkeypatch.setattr(sfumato_test_doubles.StepDDIM, "__init__", explode)
    with pytest.raises(sfumato.PluginError, match="plugin 'sfumato_test_doubles' failed to build scheduler 'test.ddim'.*no memory"):
        sfumato.build("scheduler", {"type": "test.ddim"})
