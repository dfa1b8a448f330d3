"""The hooks a sfumato plugin may implement. These docstrings are the reference documentation.

A plugin is a module that declares the plugin API it targets and implements any of these hooks
with ``@sfumato.hookimpl``::

    import sfumato

    SFUMATO_PLUGIN_API = 1

    @sfumato.hookimpl
    def register_components(register):
        register(MyScheduler)

``SFUMATO_PLUGIN_API`` is an integer; a plugin declaring another version (or a string) is refused
with a message saying what it declares and what this sfumato supports. Hooks receive a
``register`` callback (as ``llm`` does); the host validates what is registered, so a plugin cannot
corrupt the registry. A plugin that raises anything (``SystemExit`` included) while importing or
inside a hook is named and skipped; the other plugins load and answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("sfumato")
hookimpl = pluggy.HookimplMarker("sfumato")


@hookspec
def register_components(register: Callable[[type], None]) -> None:
    """Register component classes: encoders, denoisers, autoencoders, schedulers, sigma
    schedules, guidance methods, speedups, classifiers, datasets and tasks.

    Call ``register(cls)`` once per class. ``cls`` must subclass one of the interfaces in
    ``sfumato`` (its kind is taken from that base) and define ``Spec``, a ``sfumato.ComponentSpec``
    subclass whose ``type`` field is ``Literal["<name>"] = "<name>"``. First-party names are
    short: lowercase letters, digits and ``-`` (``dpmpp-2m``). Third-party names are
    ``namespace.name`` (``acme.karras``): the namespace is the plugin's name (never another
    plugin's) and the name follows the short-name rule. Two plugins registering the same kind and
    name is an error that names both. Any refusal fails the whole plugin, naming it, and rolls
    back everything it registered.
    """


@hookspec
def register_spec_tables(register: Callable[..., None]) -> None:
    """Declare pipeline spec tables beyond the core's (``[task]``, ``[text_encoder]``,
    ``[denoiser]``, ``[[guidance]]``, ...), for the components a plugin's models use:
    ``register("text_encoder_2", "encoder")`` (SDXL's second text encoder),
    ``register("controlnet", ControlNet, many=True)`` (a ``[[controlnet]]`` list).

    Call ``register(table, kind, many=False, description="")``. ``kind`` is the kind of component
    the table holds: a kind name (``"encoder"``, ``"denoiser"``, ...) or an abstract
    ``sfumato.Component`` subclass whose ``kind`` class attribute names a new kind, which
    ``register_components`` (of this plugin or a later one) then accepts subclasses of. ``many``
    makes the table a list (``[[table]]`` in TOML). This hook runs before the plugin's
    ``register_components``.

    A declared table is validated like the core's: its ``type`` against the registered types of
    its kind, its fields against their ``Spec``, errors naming ``[table]`` or ``[[table]]`` #n;
    it appears in the JSON Schema, merges through ``extends`` and takes ``--set`` overrides.
    ``Pipeline`` builds it after the core tables, placed on the pipeline's device:
    ``pipe.component(table)`` is the component (a list for ``many``). Table names are lowercase
    letters, digits and ``_``; a name the core or another plugin uses is an error naming both.
    A component in any table takes part in generation through two optional methods
    (``sfumato.conditioners``): ``extra_conditioning`` adds extras to a call's conditioning,
    ``wrap_denoiser`` runs beside every denoiser call.
    """


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register named built-in models, selectable with ``sfumato generate --model NAME``.

    Call ``register(name, spec_path, description="...")`` where ``spec_path`` is a pipeline spec
    file (weights paths inside it are relative to the file). Names follow the same namespacing
    rule as component types.
    """


@hookspec
def register_sampler_aliases(register: Callable[[str, dict[str, Any]], None]) -> None:
    """Register the names users know samplers and sigma schedules by in other tools (ComfyUI's
    ``sampler_name`` and ``scheduler``, the AUTOMATIC1111 WebUI's "DPM++ 2M Karras", ...), so that
    ``Registry.resolve_sampler(name)`` (``sfumato generate --sampler NAME``) accepts them.

    Call ``register(name, table)`` once per name, ``table`` being the part of a ``[scheduler]``
    table the name stands for:

    - a sampler's name maps to a table with a ``type`` and any other fields the name implies:
      ``register("Euler a", {"type": "euler-ancestral"})``,
      ``register("uni_pc_bh2", {"type": "unipc", "variant": "bh2"})``;
    - a sigma schedule's name maps to ``{"sigmas": ...}`` only: ``register("Karras", {"sigmas":
      "karras"})``; it may follow a sampler's name ("DPM++ 2M Karras", "dpmpp_2m karras").

    Names match case-insensitively, runs of spaces counting as one. Registered scheduler types
    and sigma schedule names resolve without an alias and are never shadowed by one. Two plugins
    giving one name different tables is an error naming both; a malformed table fails the plugin.
    """


@hookspec(firstresult=True)
def spec_from_checkpoint(path: Path) -> dict[str, Any] | None:
    """Describe a foreign checkpoint as a sfumato spec, so ``load_pipeline(path)`` can load it.

    ``path`` is a file or folder that is not a sfumato spec file: a diffusers pipeline folder
    (``model_index.json``), a Stable Diffusion single-file checkpoint, ... Return a spec dict
    (the same structure as a spec file, with absolute ``weights`` paths that the components'
    loaders understand) when this plugin recognises the format, or None to let other plugins try.
    The first non-None answer wins. Raise ``sfumato.SpecError`` for a recognised but broken
    checkpoint, naming what is wrong: that is the answer. Any other exception is a bug of the
    plugin: it is skipped, the other plugins still answer, and the error names it.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``sfumato`` command line.

    ``cli`` is the ``argparse`` sub-parsers object of the ``sfumato`` parser. Add a parser with
    ``cli.add_parser(name, help=...)`` and set its handler with
    ``parser.set_defaults(handler=function)``; the handler receives the parsed ``argparse``
    namespace and returns an exit code (or None for 0).
    """


@hookspec
def register_eval_commands(cli: Any) -> None:
    """Add evaluations to ``sfumato eval`` (``sfumato eval geneval``, ``sfumato eval zero-shot``).

    ``cli`` is the ``argparse`` sub-parsers object of the ``sfumato eval`` parser; the contract is
    the same as ``register_commands``: ``parser = cli.add_parser(name, help=...)``, then
    ``parser.set_defaults(handler=function)``. An evaluation should print a table, write its
    figures as JSON when given ``--out``, and return 0.
    """

