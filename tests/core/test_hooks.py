"""Every hook is documented and exercised (as datasette does)."""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pytest

import sfumato
from sfumato import hookspecs
from sfumato.cli import build_parser, main

HOOKS = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_tested(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 150, f"{hook} needs a docstring explaining how to implement it"
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    assert f"def {hook}(" in tests + Path(__file__).read_text().replace("def test_every_hook", "")


def make_plugin(tmp_path) -> types.ModuleType:
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text('task = "test.generate"\n')
    module = types.ModuleType("acme_models")
    module.SFUMATO_PLUGIN_API = 1

    @sfumato.hookimpl
    def register_models(register):
        register("acme.tiny", spec_path, description="a tiny model")

    @sfumato.hookimpl
    def register_commands(cli):
        parser = cli.add_parser("acme-hello", help="say hello")
        parser.add_argument("name")
        parser.set_defaults(handler=lambda args: print(f"hello {args.name}") or 3)

    @sfumato.hookimpl
    def register_eval_commands(cli):
        parser = cli.add_parser("acme-score", help="score something")
        parser.set_defaults(handler=lambda args: print("score 0.5") or 0)

    module.register_models, module.register_commands = register_models, register_commands
    module.register_eval_commands = register_eval_commands
    return module


def test_register_models_adds_named_models(tmp_path):
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    info = registry.add_plugin("acme", make_plugin(tmp_path), "local")
    assert info.status == "ok" and info.provides == {"model": ["acme.tiny"]}
    entry = registry.model("acme.tiny")
    assert entry.description == "a tiny model" and entry.plugin == "acme"
    with pytest.raises(sfumato.SpecError, match="unknown model 'nope'; valid choices: acme.tiny"):
        registry.model("nope")


def test_an_unknown_model_names_the_plugin_that_failed_to_register_models(tmp_path):
    """A broken models plugin must not look like a typo: the error carries its failure."""
    module = types.ModuleType("broken_models")
    module.SFUMATO_PLUGIN_API = 1

    def register_models(register):
        raise sfumato.PluginError("built-in model 'tiny' is missing its spec file")

    module.register_models = sfumato.hookimpl(register_models)
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("broken", module, "local")
    message = "unknown model 'tiny'; valid choices: none registered. Plugin 'broken' failed to load.*missing its spec"
    with pytest.raises(sfumato.SpecError, match=message):
        registry.model("tiny")
    with pytest.raises(sfumato.SpecError, match=message):
        sfumato.load_pipeline("tiny", registry=registry)  # a bare name is a model name, not a missing file
    with pytest.raises(sfumato.SpecError, match="spec file not found: tiny.toml"):
        sfumato.load_pipeline("tiny.toml", registry=registry)


def test_register_models_names_are_namespaced_for_third_parties(tmp_path):
    module = types.ModuleType("short_models")
    module.SFUMATO_PLUGIN_API = 1
    module.register_models = sfumato.hookimpl(lambda register: register("tiny", tmp_path / "x.toml"))
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    assert "must be namespaced" in registry.add_plugin("short", module, "local").error


def test_register_commands_adds_a_cli_subcommand(tmp_path, capsys):
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("acme", make_plugin(tmp_path), "local")
    parser = build_parser(registry)
    args = parser.parse_args(["acme-hello", "world"])
    assert args.handler(args) == 3
    assert capsys.readouterr().out == "hello world\n"


def test_register_eval_commands_adds_an_evaluation(tmp_path, capsys):
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("acme", make_plugin(tmp_path), "local")
    args = build_parser(registry).parse_args(["eval", "acme-score"])
    assert args.handler(args) == 0
    assert capsys.readouterr().out == "score 0.5\n"


def test_a_failing_register_commands_does_not_break_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_cli_plugin.py").write_text(
        "import sfumato\nSFUMATO_PLUGIN_API = 1\n"
        "@sfumato.hookimpl\ndef register_commands(cli):\n    raise RuntimeError('cli hook broke')\n"
    )
    (tmp_path / "registry.toml").write_text('[plugins]\nbad = "bad_cli_plugin"\n')
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    monkeypatch.chdir(tmp_path)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "bad" in out and "failed" in out and "cli hook broke" in out
    sfumato.set_registry(None)
