"""The ``sigmas`` field of the scheduler table: a name, a table or ``"default"``, validated against
the registered schedules; a schedule with only default fields is written back as its bare name
(locks and ``sfumato fill`` keep ``sigmas = "karras"``); errors name ``[scheduler] sigmas`` and the
valid names; ``sfumato schema`` lists the names and each schedule's table."""

from __future__ import annotations

import jsonschema
import pytest

import sfumato
import sfumato_schedulers
import sfumato_test_doubles
from sfumato.specs import spec_json_schema, validate_spec
from sfumato.testing import fresh_registry
from sfumato_test_doubles import spec_dict
from sigmas import acme_sigmas

EulerSpec = sfumato_schedulers.SCHEDULERS_BY_TYPE["euler"].Spec


def sigmas_of(value):
    return EulerSpec.model_validate({"type": "euler", "sigmas": value})


@pytest.mark.parametrize(
    "value, stored",
    [
        ("default", "default"),
        ("karras", "karras"),
        ({"type": "karras"}, "karras"),
        ({"type": "beta", "alpha": 0.6, "beta": 0.6, "domain": "sigma"}, "beta"),  # every field at its default
        ({"type": "beta", "alpha": 0.5}, {"type": "beta", "alpha": 0.5, "beta": 0.6, "domain": "sigma"}),
        ({"type": "align-your-steps", "model": "sdxl"}, {"type": "align-your-steps", "model": "sdxl"}),
    ],
    ids=["default", "name", "bare-table", "default-table", "beta-table", "ays-table"],
)
def test_values_are_stored_as_their_shortest_form_and_round_trip(value, stored):
    spec = sigmas_of(value)
    assert spec.model_dump()["sigmas"] == stored
    assert sigmas_of(spec.model_dump()["sigmas"]) == spec
    assert spec.model_dump(mode="json")["sigmas"] == stored


def test_a_table_keeps_its_validated_fields():
    sigmas = sigmas_of({"type": "beta", "alpha": 0.5}).sigmas
    assert (sigmas.type, sigmas.alpha, sigmas.beta) == ("beta", 0.5, 0.6)
    assert sigmas_of(sigmas).sigmas == sigmas  # a schedule's Spec is accepted too


def test_build_sigma_schedule_takes_every_form_the_field_takes():
    assert sfumato.build_sigma_schedule("default") is None
    for value in ("beta", {"type": "beta", "alpha": 0.5}, sigmas_of({"type": "beta", "alpha": 0.5}).sigmas):
        schedule = sfumato.build_sigma_schedule(value)
        assert isinstance(schedule, sfumato.SigmaSchedule) and schedule.type_name() == "beta"
    with pytest.raises(sfumato.SpecError, match=r"^\[scheduler\] sigmas: unknown sigma schedule 'bogus'"):
        sfumato.build_sigma_schedule("bogus")


@pytest.mark.parametrize(
    "value, needles",
    [
        ("karas", ["unknown sigma schedule 'karas'", "'default'", "'align-your-steps'", "did you mean 'karras'"]),
        ("sgm_uniform", ["did you mean 'sgm-uniform'"]),
        ({"alpha": 0.6}, ["needs a type", "'beta'"]),
        ({"type": "beta", "gamma": 1.0}, ["sigma schedule 'beta'", "gamma: unknown field"]),
        ({"type": "beta", "alpha": -1.0}, ["sigma schedule 'beta'", "alpha: Input should be greater than 0"]),
        ({"type": "beta", "alpha": "0.5"}, ["alpha: Input should be a valid number"]),
        ({"type": "align-your-steps", "model": "sd3"}, ["model: Input should be 'sd15' or 'sdxl'"]),
        (True, ["a sigma schedule is 'default', a name such as 'karras', or a table"]),
        ({"type": "default"}, ["write sigmas = \"default\", not a table"]),
    ],
    ids=["typo", "comfyui-spelling", "no-type", "unknown-field", "out-of-range", "string-number", "bad-model",
         "boolean", "default-table"],
)
def test_bad_values_are_spec_errors_naming_the_field(value, needles):
    with fresh_registry(sfumato_test_doubles, first_party=True) as registry:
        with pytest.raises(sfumato.SpecError) as raised:
            validate_spec(spec_dict(scheduler={"type": "euler", "sigmas": value}), registry, source="spec.toml")
    message = str(raised.value)
    assert message.startswith("spec.toml: [scheduler] sigmas: "), message
    for needle in needles:
        assert needle in message, message


def test_schema_lists_the_names_and_each_schedule_table():
    with fresh_registry(sfumato_test_doubles, first_party=True) as registry:
        schema = spec_json_schema(registry)
        field = schema["$defs"][_euler_def(schema)]["properties"]["sigmas"]
        names = field["anyOf"][0]["enum"]
        assert names == ["default", *registry.types("sigmas")]
        beta = next(table for table in field["anyOf"][1:] if table["properties"]["type"]["const"] == "beta")
        assert set(beta["properties"]) == {"type", "alpha", "beta", "domain"} and beta["required"] == ["type"]
        assert "Noise levels" in field["description"]
        good = spec_dict(scheduler={"type": "euler", "sigmas": {"type": "beta", "alpha": 0.5}})
        jsonschema.validate(good, schema)
        for bad in ("karas", {"type": "beta", "gamma": 1}, {"alpha": 0.5}):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(spec_dict(scheduler={"type": "euler", "sigmas": bad}), schema)


def _euler_def(schema: dict) -> str:
    return next(name for name, definition in schema["$defs"].items()
                if definition.get("properties", {}).get("type", {}).get("const") == "euler")


def test_a_third_party_schedule_is_a_valid_choice_once_its_plugin_loads():
    value = {"type": "acme_sigmas.linear", "floor": 0.2}
    with pytest.raises(ValueError, match="unknown sigma schedule 'acme_sigmas.linear'"):
        sigmas_of(value)
    with fresh_registry(acme_sigmas, first_party=True) as registry:
        assert sigmas_of(value).model_dump()["sigmas"] == value
        assert sigmas_of("acme_sigmas.linear").sigmas == "acme_sigmas.linear"
        field = spec_json_schema(registry)["$defs"][_euler_def(spec_json_schema(registry))]["properties"]["sigmas"]
        assert "acme_sigmas.linear" in field["anyOf"][0]["enum"]
