"""What a plugin must declare, and how it names what it registers.

A plugin module declares the plugin API it targets (``SFUMATO_PLUGIN_API = 1``). First-party type
and model names are short (``dpmpp-2m``); third-party ones are namespaced with the plugin's name
(``acme.karras``), so that names never collide across plugins and a name says who provides it.
"""

from __future__ import annotations

import re
from typing import Any, Container

from ._version import PLUGIN_API_VERSION, __version__
from .errors import PluginError

#: A first-party name, and the name part of a third-party one: ``dpmpp-2m``.
SHORT_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
#: The namespace of a third-party name (``acme`` in ``acme.karras``): the plugin's name.
NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]*")
NAME_SHAPE = "lowercase letters, digits and '-', starting with a letter or a digit"


def check_api_version(plugin: Any, name: str) -> None:
    """Refuse a plugin that does not target this sfumato's plugin API, saying what it declares
    and what this sfumato supports. ``name`` is the plugin's module as the user named it."""
    declared = getattr(plugin, "SFUMATO_PLUGIN_API", None)
    supported = f"this sfumato ({__version__}) supports plugin API {PLUGIN_API_VERSION}"
    if declared is None:
        raise PluginError(
            f"module {name} does not declare the plugin API it targets ({supported}); add "
            f"SFUMATO_PLUGIN_API = {PLUGIN_API_VERSION}"
        )
    if type(declared) is not int:
        raise PluginError(
            f"module {name} declares SFUMATO_PLUGIN_API = {declared!r}, a {type(declared).__name__}; "
            f"the plugin API is an integer and {supported}: write SFUMATO_PLUGIN_API = {PLUGIN_API_VERSION}"
        )
    if declared != PLUGIN_API_VERSION:
        newer = " (a newer sfumato may support it)" if declared > PLUGIN_API_VERSION else ""
        raise PluginError(
            f"module {name} targets sfumato plugin API {declared}{newer}, but {supported}; install a "
            f"version of the plugin made for plugin API {PLUGIN_API_VERSION}"
        )


def check_name(name: Any, plugin: str, first_party: bool, what: str, other_plugins: Container[str]) -> None:
    """Refuse a malformed type or model ``name`` that ``plugin`` registers, naming the plugin.

    :param first_party: the plugin is first-party: its names are short (``dpmpp-2m``). Others are
        ``namespace.name`` (``acme.karras``), the namespace being the plugin's name and never the
        name of another plugin.
    :param what: what is named, for the message (``"scheduler type"``, ``"model"``).
    :param other_plugins: the names of the other plugins, whose namespaces are theirs.
    """
    where = f"plugin {plugin!r} registers {what} {name!r}"
    if not isinstance(name, str):
        raise PluginError(f"{where}: a name is a string, like '{plugin}.my-{what.split()[-1]}'")
    if first_party:
        if not SHORT_NAME.fullmatch(name):
            raise PluginError(f"{where}: a first-party name is {NAME_SHAPE}, like {_shaped(name)!r}")
        return
    namespace, dot, short = name.rpartition(".")
    if not dot:
        raise PluginError(
            f"{where}: the name must be namespaced, like '{plugin}.{name}': short names are "
            "reserved for first-party plugins"
        )
    if not SHORT_NAME.fullmatch(short) or not (namespace == plugin or NAMESPACE.fullmatch(namespace)):
        raise PluginError(
            f"{where}: a third-party name is 'namespace.name', the namespace being the plugin's "
            f"name and the name {NAME_SHAPE}, like '{plugin}.{_shaped(short)}'"
        )
    if namespace != plugin and namespace in other_plugins:
        raise PluginError(
            f"{where}: {namespace!r} is the namespace of plugin {namespace!r}; use this plugin's "
            f"own, like '{plugin}.{short}'"
        )


def _shaped(name: str) -> str:
    """``name`` made a valid short name, to suggest: ``L ms`` -> ``l-ms``."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "name"
