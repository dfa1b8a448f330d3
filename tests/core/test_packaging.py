"""A wheel built from the repository carries the core, every first-party plugin and the manifest,
and installed into a fresh virtual environment it finds all first-party plugins."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MANIFEST = tomllib.loads((ROOT / "registry.toml").read_text())["plugins"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the files git tracks (or would track), so stale build
    output in the checkout (an ignored ``build/lib``) cannot leak into it."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        path = ROOT / name
        if path.is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name, follow_symlinks=False)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True, capture_output=True,
    )
    [path] = out.glob("sfumato-*.whl")
    return path


def test_packaged_manifest_is_the_top_level_registry():
    assert (ROOT / "core" / "sfumato" / "registry.toml").read_text() == (ROOT / "registry.toml").read_text()


def test_wheel_contains_core_plugins_and_manifest(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = tomllib.loads(zipfile.ZipFile(wheel).read("sfumato/registry.toml").decode())["plugins"]
    assert packaged == MANIFEST
    for module in MANIFEST.values():
        assert f"{module}/__init__.py" in names, f"{module} missing from the wheel"
    assert "sfumato/testing/conformance.py" in names
    for shipped in ("sfumato/nn.py", "sfumato_models/shapes/spec.toml", "sfumato_models/shapes/unet.safetensors",
                    "sfumato_models/shapes/tokenizer.json", "sfumato_models/digits/MODEL_CARD.md",
                    "sfumato_clip/bpe_simple_vocab_16e6.txt.gz", "sfumato_unet/configs/sd15.json",
                    "sfumato_vae/configs/sd1_vae.json", "sfumato_eval/digits_classifier.safetensors"):
        assert shipped in names, f"{shipped} missing from the wheel"
    # A built-in model ships its specs, weights, tokenizer and card; what rebuilds it stays in builds/.
    models = [n.removeprefix("sfumato_models/") for n in names if n.startswith("sfumato_models/")]
    extras = [n for n in models if n != "__init__.py" and not (
        n.count("/") == 1 and n.endswith((".toml", ".safetensors", "/tokenizer.json", "/MODEL_CARD.md")))]
    assert not extras, f"model-building files in the wheel (they belong in builds/): {extras}"
    assert not any("/train/" in n or n.startswith("builds/") or n.endswith(".sh") for n in names)
    assert not any(n.startswith(("core/", "plugins/")) for n in names), "no top-level core/plugins packages"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "sfumato = sfumato.cli:main" in entry_points


def test_wheel_in_a_fresh_venv_lists_the_first_party_plugins(wheel, tmp_path):
    # The venv sees only its own site-packages plus the test environment's dependencies (torch,
    # pydantic, ...), added by a .pth line: not the base interpreter's packages, which on a fresh
    # machine hold no torch, and not the repository (a .pth line adds a folder without running the
    # .pth files inside it, so the editable install of sfumato stays invisible).
    env = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env)
    python = env / "bin" / "python"
    site_dirs = json.loads(subprocess.run(
        [str(python), "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
        check=True, capture_output=True, text=True).stdout)
    own_site = Path(site_dirs[0])
    # Installed before the dependencies are visible, so pip cannot mistake the test environment's
    # editable sfumato for one installed in the venv.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (own_site / "test-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    script = textwrap.dedent("""
        import importlib, json, sfumato
        from sfumato.registry import PACKAGED_REGISTRY, read_manifest
        modules, _ = read_manifest(PACKAGED_REGISTRY)
        plugins = [
            p.to_json() | {"module_file": importlib.import_module(modules[p.name]).__file__}
            for p in sfumato.plugins() if p.source == "registry"
        ]
        import torch
        print(json.dumps({"file": sfumato.__file__, "torch": torch.__file__, "plugins": plugins}))
    """)
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert str(env) in data["file"], "imported the repository's sfumato instead of the wheel's"
    assert any(data["torch"].startswith(d) for d in deps), f"torch came from outside the test environment: {data['torch']}"
    first_party = {p["name"]: p for p in data["plugins"]}
    assert set(first_party) == set(MANIFEST)
    for name, plugin in first_party.items():
        assert plugin["status"] == "ok", f"{name}: {plugin['error']}"
        assert str(env) in plugin["module_file"], f"{name} was imported from outside the venv"


def test_no_test_builds_a_venv_that_inherits_the_base_interpreters_packages():
    """A venv with system site packages sees the base interpreter's torch, which a fresh machine
    does not have: such a test passes only where torch was installed system-wide by hand."""
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("*.py")
        if "system_site_packages=" + "True" in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders
