"""Registry files and the local plugin modules they name.

A registry file (``registry.toml``) maps plugin names to modules and may disable plugins. The
packaged one lists the first-party plugins. A local one adds plugins that live next to it; loading
it runs their code, so it is opt-in: ``--registry FILE`` or ``SFUMATO_REGISTRY=FILE``, never a
``registry.toml`` that merely sits in the working directory (a downloaded model folder could hold
one).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from .errors import SpecError

#: The environment variable naming a local registry file, like the ``--registry FILE`` option.
REGISTRY_ENV = "SFUMATO_REGISTRY"


def read_manifest(path: Path) -> tuple[dict[str, str], list[str]]:
    """Read a registry file: ``[plugins] name = "module"`` and ``disable = ["name", ...]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML: {exc}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=str(path)) from exc
    except OSError as exc:
        raise SpecError(f"cannot read the registry file: {exc.strerror or exc}", source=str(path)) from exc
    plugins = data.get("plugins", {})
    disable = data.get("disable", [])
    problems = [f"unknown key {key!r}; a registry file has a [plugins] table and an optional disable list"
                for key in sorted(set(data) - {"plugins", "disable"})]
    if not isinstance(plugins, dict):
        problems.append(f'[plugins] must be a table of plugin names and modules, like acme = "acme_plugin"; '
                        f"got {plugins!r}")
        plugins = {}
    if not isinstance(disable, list):
        problems.append(f'disable must be a list of plugin names, like disable = ["clip"]; got {disable!r}')
        disable = []
    problems += [
        f'[plugins] {name}: expected a module name or a .py file as a string, like {name} = "{name}_plugin"; '
        f"got {module!r}"
        for name, module in plugins.items() if not isinstance(module, str) or not module.strip()
    ]
    problems += [f"disable: expected plugin names as strings, got {n!r}" for n in disable if not isinstance(n, str)]
    if problems:
        raise SpecError(problems, source=str(path))
    return dict(plugins), list(disable)


def local_registry_path(local: str | Path | None) -> Path | None:
    """The local registry file to load: ``local`` itself, or for ``"auto"`` the file named by
    ``SFUMATO_REGISTRY`` (nothing when it is unset); a ``SpecError`` when that is not a file."""
    if local is None:
        return None
    origin = ""
    if local == "auto":
        local, origin = os.environ.get(REGISTRY_ENV, "").strip(), f" (named by {REGISTRY_ENV})"
        if not local:
            return None
    path = Path(local)
    if not path.exists():
        raise SpecError(f"registry file not found: {path}{origin}")
    if not path.is_file():
        raise SpecError(f"registry file {path}{origin} is not a file; give the path of a registry.toml")
    return path


def import_local(module: str, base_dir: Path) -> ModuleType:
    """Import a local plugin named in a registry file in ``base_dir``: ``x.py`` (a path relative to
    the file), or a module or package in ``base_dir`` (an installed module when there is none).

    The plugin is found by path, never by putting its folder first on ``sys.path``, and loads
    under the private name ``sfumato_local_<name>``: it can neither shadow an installed module nor
    replace one already imported. While its code runs, its folder is at the end of ``sys.path`` so
    that it can import its own helper modules; the folder is removed again afterwards.
    """
    base_dir = base_dir.resolve()  # a relative folder would be cached by sys.path_importer_cache
    if module.endswith(".py"):
        path = (base_dir / module).resolve()
        if not path.is_file():
            raise ImportError(f"plugin file not found: {path}")
        top, rest, origin, locations = path.stem, "", str(path), None
    else:
        top, _, rest = module.partition(".")
        found = importlib.machinery.PathFinder.find_spec(top, [str(base_dir)])
        if found is None:
            try:
                return importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != top:
                    raise
                raise ModuleNotFoundError(f"no module {top!r} in {base_dir}, next to the registry file, "
                                          "and none installed", name=top) from None
        if found.origin is None:
            raise ImportError(f"{base_dir / top} is a folder without __init__.py; make it a package")
        origin, locations = found.origin, found.submodule_search_locations
    name = f"sfumato_local_{top}"
    spec = importlib.util.spec_from_file_location(name, origin, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin {module!r} from {origin}")
    folder = str(Path(origin).parent.parent if locations is not None else Path(origin).parent)
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        return importlib.import_module(f"{name}.{rest}") if rest else mod
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added:
            sys.path.remove(folder)
