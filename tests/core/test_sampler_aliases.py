"""The ``register_sampler_aliases`` hook and ``Registry.resolve_sampler``: the names ComfyUI and the
AUTOMATIC1111 WebUI give samplers and schedules resolve to sfumato ``[scheduler]`` fields."""

from __future__ import annotations

import types

import pytest

import sfumato


def registry_with(*plugins: tuple[str, types.ModuleType]) -> sfumato.Registry:
    """A registry with the first-party plugins and ``plugins`` as local plugins."""
    registry = sfumato.Registry(entry_points=False, local=None)
    for name, module in plugins:
        registry.add_plugin(name, module, "local")
    return registry


def alias_plugin(name: str, aliases: dict[str, dict]) -> types.ModuleType:
    module = types.ModuleType(name)
    module.SFUMATO_PLUGIN_API = 1

    @sfumato.hookimpl
    def register_sampler_aliases(register):
        for alias, table in aliases.items():
            register(alias, table)

    module.register_sampler_aliases = register_sampler_aliases
    return module


@pytest.mark.parametrize("name, schedule, table", [
    ("DPM++ 2M Karras", None, {"type": "dpmpp-2m", "sigmas": "karras"}),
    ("dpmpp_2m", "karras", {"type": "dpmpp-2m", "sigmas": "karras"}),
    ("dpmpp_2m karras", None, {"type": "dpmpp-2m", "sigmas": "karras"}),
    ("  euler   A ", None, {"type": "euler-ancestral"}),
    ("uni_pc_bh2", "sgm_uniform", {"type": "unipc", "variant": "bh2", "order": 3, "sigmas": "sgm-uniform"}),
    ("DPM2 Exponential", None, {"type": "dpm2", "sigmas": "exponential"}),
    ("PLMS", None, {"type": "pndm", "skip_prk_steps": True, "lower_order_final": False}),
    ("dpmpp-3m", "beta", {"type": "dpmpp-3m", "sigmas": "beta"}),
    ("res_multistep kl_optimal", None, {"type": "res-multistep", "sigmas": "kl-optimal"}),
    ("lms", "default", {"type": "lms", "sigmas": "default"}),
])
def test_tool_names_resolve_to_scheduler_fields(name, schedule, table):
    assert sfumato.get_registry().resolve_sampler(name, schedule) == table
    sfumato.build("scheduler", {**table, "steps": 4})  # a valid [scheduler] table


def test_every_first_party_alias_builds_a_scheduler():
    registry = sfumato.get_registry()
    assert len(registry.sampler_aliases) >= 20 and len(registry.schedule_aliases) >= 7
    for alias in registry.sampler_aliases.values():
        sfumato.build("scheduler", {**alias.table, "steps": 4})
    for alias in registry.schedule_aliases.values():
        sfumato.build("scheduler", {"type": "euler", "steps": 4, **alias.table})


@pytest.mark.parametrize("name, schedule, needles", [
    ("dpmpp 2m", None, ["[scheduler]", "unknown sampler name 'dpmpp 2m'", "did you mean", "'dpmpp_2m'",
                        "docs/schedulers.md"]),
    ("euler", "karas", ["[scheduler]", "unknown sigma schedule 'karas'", "did you mean 'karras'"]),
    ("DPM++ 2M Karras", "exponential", ["[scheduler]", "already chooses sigmas = 'karras'", "'exponential'"]),
    ("Karras", None, ["unknown sampler name 'Karras'"]),  # a schedule alone names no sampler
])
def test_unknown_names_are_spec_errors_naming_the_scheduler_table(name, schedule, needles):
    with pytest.raises(sfumato.SpecError) as error:
        sfumato.get_registry().resolve_sampler(name, schedule)
    for needle in needles:
        assert needle in str(error.value)


def test_a_plugin_registers_aliases_for_its_own_and_others_samplers():
    registry = registry_with(("acme", alias_plugin("acme_names", {
        "Turbo": {"type": "euler", "steps": 4}, "Flat": {"sigmas": "simple"}})))
    assert registry.resolve_sampler("turbo flat") == {"type": "euler", "steps": 4, "sigmas": "simple"}
    assert registry.sampler_aliases["turbo"].plugin == "acme"


def test_aliases_never_shadow_scheduler_types():
    registry = registry_with(("acme", alias_plugin("acme_shadow", {"euler": {"type": "heun"}})))
    assert registry.resolve_sampler("euler") == {"type": "euler"}


def test_two_plugins_giving_one_name_different_tables_fail_the_second():
    registry = registry_with(("one", alias_plugin("one_names", {"Fast": {"type": "euler"}})),
                             ("two", alias_plugin("two_names", {"fast": {"type": "heun"}})))
    two = next(info for info in registry.plugins() if info.name == "two")
    assert two.status == "failed" and "'fast'" in two.error and "'one'" in two.error and "'two'" in two.error
    assert registry.resolve_sampler("fast") == {"type": "euler"}


@pytest.mark.parametrize("name, table, needle", [
    ("", {"type": "euler"}, "non-empty string"),
    ("x", ["euler"], "dict of [scheduler] fields"),
    ("x", {"sigmas": "karras", "steps": 3}, "'sigmas' only"),
    ("x", {"type": 3}, "'type' must be a scheduler type name"),
])
def test_malformed_registrations_fail_the_plugin_with_what_is_wrong(name, table, needle):
    registry = registry_with(("bad", alias_plugin("bad_names", {name: table})))
    bad = next(info for info in registry.plugins() if info.name == "bad")
    assert bad.status == "failed" and "register_sampler_aliases" in bad.error and needle in bad.error
