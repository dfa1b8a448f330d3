"""The ``sfumato`` command line: plugins, schema, fill, validate; local registries."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

import sfumato
from sfumato.cli import main

DOUBLES = Path(__file__).parents[1] / "sfumato_test_doubles.py"
GOOD = (Path(__file__).parent / "test_specs.py").read_text().split('GOOD = """')[1].split('"""')[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory whose registry.toml adds the test doubles as local plugin ``test``."""
    (tmp_path / "registry.toml").write_text(f'[plugins]\ntest = "{DOUBLES}"\n')
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    (tmp_path / "good.toml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sfumato.set_registry(None)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sfumato {sfumato.__version__}"


def test_plugins_json_lists_a_local_plugin(workdir, capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    local = plugins["test"]
    assert set(local) >= {"name", "version", "source", "status", "error", "provides"}
    assert (local["source"], local["status"], local["error"]) == ("local", "ok", None)
    assert "test.ddim" in local["provides"]["scheduler"]


def test_plugins_lists_a_failed_plugin_with_its_error(workdir, capsys):
    (workdir / "broken_cli.py").write_text("raise ImportError('missing dependency foo')\n")
    (workdir / "registry.toml").write_text(f'[plugins]\ntest = "{DOUBLES}"\nbroken = "broken_cli"\n')
    code, out, _ = run(capsys, "plugins", "--json")
    broken = {p["name"]: p for p in json.loads(out)}["broken"]
    assert code == 0 and broken["status"] == "failed" and "missing dependency foo" in broken["error"]
    code, out, _ = run(capsys, "plugins")
    assert "broken" in out and "failed" in out and "missing dependency foo" in out


def test_registry_option_points_at_another_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "elsewhere.toml"
    other.write_text(f'[plugins]\ntest = "{DOUBLES}"\n')
    code, out, _ = run(capsys, "--registry", str(other), "plugins", "--json")
    assert code == 0 and "test" in {p["name"] for p in json.loads(out)}
    sfumato.set_registry(None)


def test_validate_exit_codes(workdir, capsys):
    assert run(capsys, "validate", "good.toml")[0] == 0
    (workdir / "bad.toml").write_text(GOOD.replace('"test.ddim"', '"nope"'))
    code, _, err = run(capsys, "validate", "bad.toml")
    assert code == 2 and "bad.toml" in err and "unknown scheduler type 'nope'" in err and "'test.ddim'" in err
    code, _, err = run(capsys, "validate", "good.toml", "--set", "scheduler.steps=zero")
    assert code == 2 and "[scheduler] steps" in err
    code, _, err = run(capsys, "validate", "missing.toml")
    assert code == 2 and "not found" in err


def test_fill_writes_every_default(workdir, capsys):
    code, out, _ = run(capsys, "fill", "good.toml")
    filled = tomllib.loads(out)
    assert code == 0
    assert filled["runtime"]["dtype"] == "float32"
    assert filled["diffusion"]["timesteps"] == 1000 and filled["diffusion"]["prediction"] == "epsilon"
    assert filled["text_encoder"]["dim"] == 8
    # what fill writes is itself a valid spec
    (workdir / "filled.toml").write_text(out)
    assert run(capsys, "validate", "filled.toml")[0] == 0


def test_schema_accepts_good_specs_and_rejects_bad_ones(workdir, capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    good = tomllib.loads(GOOD)
    jsonschema.validate(good, schema)
    bad_cases = {
        "unknown type": GOOD.replace('"test.ddim"', '"nope"'),
        "unknown field": GOOD.replace("steps = 4", "stepz = 4"),
        "wrong type": GOOD.replace("steps = 4", 'steps = "many"'),
        "missing required": GOOD + '\n[[guidance]]\ntype = "test.offset"\n',
    }
    for name, text in bad_cases.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(tomllib.loads(text), schema)
            pytest.fail(f"schema accepted a spec with {name}")


def test_schema_of_one_kind(workdir, capsys):
    code, out, _ = run(capsys, "schema", "--kind", "scheduler")
    text = json.dumps(json.loads(out))
    assert code == 0 and "test.ddim" in text and "test.noisy" in text


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sfumato", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and sfumato.__version__ in out.stdout


def test_schema_of_a_kind_a_plugin_declares(capsys):
    code, out, _ = run(capsys, "schema", "--kind", "controlnet")
    assert code == 0 and json.loads(out)["properties"]["type"]["const"] == "controlnet"
