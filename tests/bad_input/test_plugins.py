"""Bad plugins and registry files: every command still answers, and the message names the plugin.

A plugin that raises anything at import or in a hook (``SystemExit`` included) is recorded as
failed and the others load; names and API versions are checked with messages that say what the
plugin declares and what would be right; an unknown type names only the failed plugins that could
have provided it; a ``registry.toml`` in the working directory is never run unless named.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest

import sfumato
import sfumato_test_doubles
from bad_input.harness import Case, check, run_cli
from sfumato import Registry

REGISTRY = ["--registry", "registry.toml"]

GUIDANCE = """
from typing import Literal
import sfumato

SFUMATO_PLUGIN_API = {api}


class Boom(sfumato.Guidance):
    class Spec(sfumato.ComponentSpec):
        type: Literal[{name!r}] = {name!r}

    def __init__(self, spec):
        self.spec = spec

    def wrap(self, predictor, context):
        def guided(x, t, cond):
            raise ValueError("boom at this step")
        return guided


@sfumato.hookimpl
def register_components(register):
    register(Boom)
"""

HOOKS = """
import sys
import sfumato

SFUMATO_PLUGIN_API = 1

@sfumato.hookimpl
def {hook}({argument}):
    {body}
"""

def guidance(name: str = "acme.boom", api: str = "1") -> str:
    """A plugin registering a guidance named ``name`` whose guided predictor raises."""
    return GUIDANCE.format(name=name, api=api)


def hook(hook: str, body: str) -> str:
    argument = {"spec_from_checkpoint": "path", "register_components": "register",
                "register_models": "register"}.get(hook, "cli")
    return HOOKS.format(hook=hook, argument=argument, body=body)


def files(plugins: dict[str, str] | None = None, registry: str | None = None, spec: str | None = None,
          extra: dict[str, str] | None = None):
    """A setup writing plugin modules ``{plugin name: source}`` (as ``<name>_plugin.py``), a
    ``registry.toml`` naming them (or ``registry`` verbatim), ``spec.toml``, and ``extra`` files
    (``"<folder>"`` makes a folder)."""
    plugins = plugins or {}

    def setup(root: Path) -> None:
        for name, source in plugins.items():
            (root / f"{name}_plugin.py").write_text(textwrap.dedent(source))
        text = registry if registry is not None else "[plugins]\n" + "".join(
            f'{name} = "{name}_plugin"\n' for name in plugins)
        (root / "registry.toml").write_text(text)
        for name, content in (({"spec.toml": spec} if spec else {}) | (extra or {})).items():
            if content == "<folder>":
                (root / name).mkdir()
            else:
                (root / name).write_text(content)

    return setup


def bytecode(*names: str) -> tuple[str, ...]:
    """The bytecode caches Python may write when it imports the plugin modules ``names``."""
    return tuple(importlib.util.cache_from_source(f"{name}_plugin.py") for name in names)


def guidance_spec(type_name: str) -> str:
    return f'[[guidance]]\ntype = "{type_name}"\n'


def generation_model(root: Path) -> None:
    """The test doubles as local plugin ``test`` in an untrained spec (``spec.json``) guided by
    ``acme.boom``, whose predictor raises while sampling."""
    registry = f'[plugins]\ntest = "{sfumato_test_doubles.__file__}"\nacme = "acme_plugin"\n'
    spec = json.dumps(sfumato_test_doubles.spec_dict(guidance=[{"type": "acme.boom"}]))
    files({"acme": guidance()}, registry, extra={"spec.json": spec})(root)


MISSING_DEPENDENCY = "raise ImportError('missing dependency foo')\n"

CASES = [
    # -- whatever a plugin raises at import, the others load and every command still answers --
    Case("import-system-exit", REGISTRY + ["plugins", "--check"], ["acme", "SystemExit", "3"],
         files({"acme": "raise SystemExit(3)\n"}), may_write=bytecode("acme")),
    Case("import-sys-exit-0-then-validate", REGISTRY + ["validate", "spec.toml"],
         ["unknown guidance type 'acme.boom'", "plugin 'acme' failed to load", "SystemExit"],
         files({"acme": "import sys\nsys.exit(0)\n"}, spec=guidance_spec("acme.boom")),
         may_write=bytecode("acme")),
    Case("import-base-exception", REGISTRY + ["plugins", "--check"], ["acme", "Quit", "no GPU here"],
         files({"acme": "class Quit(BaseException):\n    pass\nraise Quit('no GPU here')\n"}),
         may_write=bytecode("acme")),
    Case("import-system-exit-other-commands-run", REGISTRY + ["validate", "missing.toml"], ["missing.toml"],
         files({"acme": "raise SystemExit(3)\n"}), may_write=bytecode("acme")),
    Case("import-error-beside-a-good-plugin", REGISTRY + ["plugins", "--check"], ["1 plugin failed", "broken"],
         files({"broken": MISSING_DEPENDENCY, "acme": guidance()}), may_write=bytecode("broken", "acme")),
    # -- whatever a plugin raises in a hook fails that plugin, named with the hook --------------
    Case("register-components-system-exit", REGISTRY + ["plugins", "--check"],
         ["acme", "in register_components", "SystemExit"],
         files({"acme": hook("register_components", "sys.exit(1)")}), may_write=bytecode("acme")),
    Case("register-commands-system-exit-other-commands-run", REGISTRY + ["validate", "missing.toml"],
         ["missing.toml"], files({"acme": hook("register_commands", "sys.exit(0)")}), may_write=bytecode("acme")),
    Case("register-commands-error-check", REGISTRY + ["plugins", "--check"],
         ["acme", "in register_commands", "cli broke"],
         files({"acme": hook("register_commands", "raise RuntimeError('cli broke')")}), may_write=bytecode("acme")),
    Case("check-json-lists-failures", REGISTRY + ["plugins", "--json", "--check"], ["acme", "missing dependency foo"],
         files({"acme": MISSING_DEPENDENCY}), may_write=bytecode("acme")),
    # -- spec_from_checkpoint: a plugin that raises is named --------------------------------------
    Case("checkpoint-hook-raises-on-a-folder", REGISTRY + ["convert", "ckpt", "--out", "converted"],
         ["ckpt", "plugin 'acme'", "spec_from_checkpoint", "cannot parse header"],
         files({"acme": hook("spec_from_checkpoint", "raise ValueError('cannot parse header')")},
               extra={"ckpt": "<folder>"}),
         may_write=bytecode("acme")),
    Case("checkpoint-hook-system-exit-on-a-file", REGISTRY + ["convert", "model.bin", "--out", "converted"],
         ["model.bin", "plugin 'acme'", "SystemExit"],
         files({"acme": hook("spec_from_checkpoint", "sys.exit(0)")}, extra={"model.bin": "weights"}),
         may_write=bytecode("acme")),
    # -- an error raised inside a plugin's component at run time names the plugin ---------------
    Case("guidance-raises-while-sampling", REGISTRY + ["generate", "a red circle", "--spec", "spec.json",
                                                       "--out", "a.png", "--no-progress"],
         ["plugin 'acme'", "boom at this step"], generation_model, may_write=bytecode("acme")),
    # -- unknown names: close matches, and only the failed plugins that could provide them ------
    Case("typo-of-a-first-party-type-beside-a-failed-plugin", REGISTRY + ["validate", "spec.toml"],
         ["unknown guidance type 'cgf'", "did you mean 'cfg'", "1 plugin failed to load", "sfumato plugins"],
         files({"acme": MISSING_DEPENDENCY}, spec=guidance_spec("cgf")), may_write=bytecode("acme")),
    Case("type-of-a-failed-plugin", REGISTRY + ["validate", "spec.toml"],
         ["unknown guidance type 'acme.boom'", "plugin 'acme' failed to load", "missing dependency foo"],
         files({"acme": MISSING_DEPENDENCY}, spec=guidance_spec("acme.boom")), may_write=bytecode("acme")),
    Case("type-of-a-failed-plugin-beside-another-failure", REGISTRY + ["validate", "spec.toml"],
         ["plugin 'acme' failed to load", "missing dependency foo", "1 other plugin failed to load"],
         files({"acme": MISSING_DEPENDENCY, "other": "raise ImportError('other trouble')\n"},
               spec=guidance_spec("acme.boom")), may_write=bytecode("acme", "other")),
    Case("typo-of-a-third-party-type", REGISTRY + ["validate", "spec.toml"],
         ["unknown guidance type 'acme.bom'", "did you mean 'acme.boom'"],
         files({"acme": guidance()}, spec=guidance_spec("acme.bom")), may_write=bytecode("acme")),
    Case("typo-of-a-model", ["generate", "a red circle", "--model", "shapez"],
         ["unknown model 'shapez'", "did you mean 'shapes'"]),
    Case("typo-of-a-model-beside-a-failed-plugin", REGISTRY + ["generate", "a red circle", "--model", "shapez"],
         ["unknown model 'shapez'", "did you mean 'shapes'", "1 plugin failed to load"],
         files({"acme": MISSING_DEPENDENCY}), may_write=bytecode("acme")),
    # -- malformed type and model names are refused, naming the plugin --------------------------
    *[Case(f"type-name-{label}", REGISTRY + ["plugins", "--check"], ["plugin 'lab'", repr(name), *needles],
           files({"lab": guidance(name)}), may_write=bytecode("lab"))
      for label, name, needles in [
          ("leading-dot", ".lms", ["namespace.name", "'lab.lms'"]),
          ("trailing-dot", "lab.", ["namespace.name"]),
          ("space", "lab.l ms", ["namespace.name", "'lab.l-ms'"]),
          ("uppercase", "lab.LMS", ["lowercase", "'lab.lms'"]),
          ("two-dots", "lab.x.y", ["namespace.name"]),
          ("underscore-in-name", "lab.l_ms", ["'-'", "'lab.l-ms'"]),
          ("another-plugins-namespace", "clip.lms", ["namespace of plugin 'clip'", "'lab.lms'"]),
          ("short", "lms", ["must be namespaced", "'lab.lms'"]),
      ]],
    Case("type-name-not-a-string", REGISTRY + ["plugins", "--check"], ["plugin 'lab'", "a name is a string"],
         files({"lab": guidance().replace("Literal['acme.boom'] = 'acme.boom'", "Literal[3] = 3")}),
         may_write=bytecode("lab")),
    Case("model-name-with-a-space", REGISTRY + ["plugins", "--check"], ["plugin 'lab'", "model 'lab.tiny model'"],
         files({"lab": hook("register_models", "register('lab.tiny model', 'tiny.toml')")}), may_write=bytecode("lab")),
    Case("malformed-type-used-in-a-spec", REGISTRY + ["validate", "spec.toml"],
         ["unknown guidance type 'lab.l ms'", "plugin 'lab' failed to load", "namespace.name"],
         files({"lab": guidance("lab.l ms")}, spec=guidance_spec("lab.l ms")), may_write=bytecode("lab")),
    # -- the plugin API version: what the plugin declares and what this sfumato supports --------
    Case("api-version-a-string", REGISTRY + ["plugins", "--check"],
         ["acme", "SFUMATO_PLUGIN_API = '1'", "a str", "supports plugin API 1", "SFUMATO_PLUGIN_API = 1"],
         files({"acme": guidance(api="'1'")}), may_write=bytecode("acme")),
    Case("api-version-a-float", REGISTRY + ["plugins", "--check"], ["acme", "SFUMATO_PLUGIN_API = 1.0", "a float"],
         files({"acme": guidance(api="1.0")}), may_write=bytecode("acme")),
    Case("api-version-a-bool", REGISTRY + ["plugins", "--check"], ["acme", "SFUMATO_PLUGIN_API = True", "a bool"],
         files({"acme": guidance(api="True")}), may_write=bytecode("acme")),
    Case("api-version-from-the-future", REGISTRY + ["plugins", "--check"],
         ["acme", "targets sfumato plugin API 2", "supports plugin API 1", "newer sfumato"],
         files({"acme": guidance(api="2")}), may_write=bytecode("acme")),
    Case("api-version-missing", REGISTRY + ["plugins", "--check"],
         ["acme", "does not declare", "SFUMATO_PLUGIN_API = 1"],
         files({"acme": guidance().replace("SFUMATO_PLUGIN_API = 1", "")}), may_write=bytecode("acme")),
    # -- registry files: opt-in, and checked like any input -------------------------------------
    Case("registry-in-the-working-directory-is-not-run", ["validate", "spec.toml"],
         ["unknown guidance type 'acme.boom'"],
         files({"acme": "open('pwned.txt', 'w').write('ran')\n" + guidance()}, spec=guidance_spec("acme.boom"))),
    Case("registry-missing", ["--registry", "nope.toml", "plugins"], ["registry file not found: nope.toml"]),
    Case("registry-is-a-folder", ["--registry", "plugins.d", "plugins"], ["plugins.d", "not a file"],
         files(extra={"plugins.d": "<folder>"})),
    Case("registry-malformed-toml", REGISTRY + ["plugins"], ["registry.toml", "malformed TOML"],
         files(registry="[plugins\n")),
    Case("registry-not-utf8", REGISTRY + ["plugins"], ["registry.toml", "UTF-8"],
         lambda root: (root / "registry.toml").write_bytes(b'[plugins]\nacme = "caf\xe9"\n')),
    Case("registry-module-not-a-string", REGISTRY + ["plugins"], ["registry.toml", "[plugins] acme", "got 3"],
         files(registry="[plugins]\nacme = 3\n")),
    Case("registry-module-a-table", REGISTRY + ["plugins"], ["registry.toml", "[plugins] acme", "module name"],
         files(registry='[plugins.acme]\nmodule = "acme_plugin"\n')),
    Case("registry-disable-not-a-list", REGISTRY + ["plugins"], ["registry.toml", "disable must be a list"],
         files(registry='disable = "clip"\n[plugins]\n')),
    Case("registry-module-not-found", REGISTRY + ["plugins", "--check"],
         ["acme", "nope_module", "next to the registry file"],
         files(registry='[plugins]\nacme = "nope_module"\n')),
    Case("registry-plugin-file-not-found", REGISTRY + ["plugins", "--check"],
         ["acme", "plugin file not found", "nope.py"],
         files(registry='[plugins]\nacme = "nope.py"\n')),
]

#: What a case's message must not contain: the errors of plugins that could not provide the name.
ABSENT = {
    "typo-of-a-first-party-type-beside-a-failed-plugin": ["missing dependency foo"],
    "type-of-a-failed-plugin-beside-another-failure": ["other trouble"],
    "typo-of-a-model-beside-a-failed-plugin": ["missing dependency foo"],
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_plugin_input_exits_2_naming_the_culprit(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    message = check(case, tmp_path, capsys, monkeypatch).lower()
    for text in ABSENT.get(case.id, ()):
        assert text.lower() not in message, f"the message lists an unrelated failure {text!r}:\n{message}"


def test_sfumato_registry_names_the_local_registry(tmp_path, capsys, monkeypatch):
    files({"acme": guidance()}, spec=guidance_spec("acme.boom"))(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    code, out, err = run_cli(["validate", "spec.toml"], capsys)
    assert (code, err) == (0, "")


def test_sfumato_registry_naming_a_missing_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SFUMATO_REGISTRY", "gone.toml")
    message = check(Case("env-missing", ["validate", "spec.toml"], ["gone.toml", "not found", "SFUMATO_REGISTRY"]),
                    tmp_path, capsys, monkeypatch)
    assert "spec.toml" not in message  # the registry is reported before the command runs


def test_plugins_notes_an_unused_registry_file_and_other_commands_do_not(tmp_path, capsys, monkeypatch):
    files({"acme": guidance()})(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["plugins"], capsys)
    assert code == 0 and "acme" not in out
    assert err.count("\n") == 1 and "registry.toml is not loaded" in err and "--registry registry.toml" in err
    code, _, err = run_cli(["validate", "missing.toml"], capsys)
    assert code == 2 and "registry.toml" not in err
    code, out, err = run_cli(REGISTRY + ["plugins"], capsys)
    assert code == 0 and "acme" in out and err == ""


def test_plugins_check_exits_0_when_every_plugin_loads(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["plugins", "--check"], capsys)
    assert (code, err) == (0, "") and "clip" in out


def test_plugins_without_check_exits_0_listing_failures(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    files({"acme": MISSING_DEPENDENCY})(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(REGISTRY + ["plugins"], capsys)
    assert code == 0 and "missing dependency foo" in out


def test_a_local_plugin_does_not_stay_on_sys_path_nor_shadow_installed_modules(tmp_path, monkeypatch):
    """A folder named by a registry file is searched for its plugins, never put first on sys.path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    helper_import = "\nimport acme_helpers\nHELP = acme_helpers.X\n"
    (tmp_path / "colorsys.py").write_text(textwrap.dedent(guidance()) + helper_import)
    (tmp_path / "acme_helpers.py").write_text("X = 'from the plugin folder'\n")
    (tmp_path / "registry.toml").write_text('[plugins]\nacme = "colorsys"\n')
    registry = Registry(first_party=False, entry_points=False, local=tmp_path / "registry.toml")
    [info] = registry.plugins()
    assert info.status == "ok", info.error
    assert registry.types("guidance") == ["acme.boom"]
    assert str(tmp_path) not in sys.path
    import colorsys

    assert hasattr(colorsys, "rgb_to_hsv") and not hasattr(colorsys, "Karras")  # the stdlib module
    plugin_module = sys.modules[registry.components["guidance"]["acme.boom"].cls.__module__]
    assert plugin_module.HELP == "from the plugin folder"  # its own helper module imported
    assert registry.plugin_of_module(plugin_module.__name__) == "acme"
    sys.modules.pop("acme_helpers")


def test_plugin_of_module_maps_a_plugins_package_to_its_name():
    registry = Registry(entry_points=False, local=None)
    assert registry.plugin_of_module("sfumato_clip") == "clip"
    assert registry.plugin_of_module("sfumato_clip.model") == "clip"
    assert registry.plugin_of_module("sfumato_clipper") is None
    assert registry.plugin_of_module("sfumato.registry") is None
    assert registry.plugin_of_module("torch.nn") is None


def checkpoint_plugin(name: str, answer) -> types.ModuleType:
    module = types.ModuleType(name)
    module.SFUMATO_PLUGIN_API = 1
    module.spec_from_checkpoint = sfumato.hookimpl(answer)
    return module


def test_a_raising_spec_from_checkpoint_does_not_stop_the_others(tmp_path):
    def raises(path):
        raise KeyError("header")

    registry = Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("good", checkpoint_plugin("good_ckpt", lambda path: {"task": "text-to-image"}), "local")
    registry.add_plugin("bad", checkpoint_plugin("bad_ckpt", raises), "local")  # asked first
    with pytest.warns(RuntimeWarning, match="plugin 'bad' raised in spec_from_checkpoint: KeyError"):
        assert registry.spec_from_checkpoint(tmp_path) == {"task": "text-to-image"}


def test_a_spec_error_from_spec_from_checkpoint_is_the_answer(tmp_path):
    def broken(path):
        raise sfumato.SpecError("model_index.json: no unet", source=str(path))

    registry = Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("good", checkpoint_plugin("good_ckpt", lambda path: {"task": "text-to-image"}), "local")
    registry.add_plugin("sd", checkpoint_plugin("sd_ckpt", broken), "local")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sfumato.SpecError, match="no unet"):
            registry.spec_from_checkpoint(tmp_path)


def test_a_failed_plugins_rolled_back_registrations_may_hold_any_model_name():
    module = types.ModuleType("short_models")
    module.SFUMATO_PLUGIN_API = 1
    module.register_models = sfumato.hookimpl(lambda register: register("tiny", "tiny.toml"))
    registry = Registry(first_party=False, entry_points=False, local=None)
    registry.add_plugin("acme", module, "local")
    with pytest.raises(sfumato.SpecError, match="Plugin 'acme' failed to load.*must be namespaced, like 'acme.tiny'"):
        registry.model("tiny")


def test_first_party_names_are_short():
    module = types.ModuleType("first_party_models")
    module.SFUMATO_PLUGIN_API = 1
    module.register_models = sfumato.hookimpl(lambda register: register("shapes.v2", "x.toml"))
    registry = Registry(first_party=False, entry_points=False, local=None)
    info = registry.add_plugin("models", module, "registry")
    assert info.status == "failed" and "first-party name" in info.error and "'shapes-v2'" in info.error


def test_an_interrupt_while_importing_a_plugin_still_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "slow.py").write_text("raise KeyboardInterrupt\n")
    (tmp_path / "registry.toml").write_text('[plugins]\nslow = "slow.py"\n')
    with pytest.raises(KeyboardInterrupt):
        Registry(first_party=False, entry_points=False, local=tmp_path / "registry.toml")


def test_the_sampling_case_fails_only_because_of_its_guidance(tmp_path, capsys, monkeypatch):
    """Without the raising guidance, the model of ``guidance-raises-while-sampling`` generates."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    generation_model(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(sfumato_test_doubles.spec_dict()))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(REGISTRY + ["generate", "a red circle", "--spec", "spec.json", "--out", "a.png",
                                       "--no-progress"], capsys)
    assert code == 0, err
