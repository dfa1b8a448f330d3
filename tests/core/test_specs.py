"""Spec files: validation errors name file, table and field; extends; overrides; round trips."""

from __future__ import annotations

import json

import pytest

import sfumato
from sfumato.specs import load_spec
from sfumato_test_doubles import spec_dict

GOOD = """
task = "test.generate"

[text_encoder]
type = "test.chars"

[denoiser]
type = "test.linear"
channels = 3

[diffusion]
betas = "linear"

[scheduler]
type = "test.ddim"
steps = 4

[[guidance]]
type = "test.cfg"
scale = 4.0
"""


@pytest.fixture
def spec_file(tmp_path):
    def write(text: str, name: str = "spec.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def error_of(doubles, path, overrides=None) -> str:
    with pytest.raises(sfumato.SpecError) as info:
        load_spec(path, doubles, overrides)
    return str(info.value)


def test_a_good_spec_validates_and_keeps_plugin_fields(doubles, spec_file):
    spec = load_spec(spec_file(GOOD), doubles)
    assert spec.scheduler.steps == 4 and spec.guidance[0].scale == 4.0
    assert type(spec.scheduler).__qualname__ == "StepDDIM.Spec"
    again = sfumato.specs.validate_spec(spec.to_dict(), doubles)
    assert again == spec


def test_unknown_type_lists_the_valid_choices(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD.replace('"test.ddim"', '"test.dmm"')))
    assert "spec.toml" in message and "[scheduler] type" in message
    assert "unknown scheduler type 'test.dmm'" in message
    assert "'test.ddim', 'test.noisy'" in message


def test_unknown_field_is_named(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD.replace("steps = 4", "stepz = 4")))
    assert "[scheduler] stepz: unknown field" in message


def test_wrong_typed_value_is_named_with_the_value(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD.replace("steps = 4", 'steps = "many"')))
    assert "[scheduler] steps:" in message and "valid integer" in message and "'many'" in message


def test_missing_required_field_is_named(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD + '\n[[guidance]]\ntype = "test.offset"\n'))
    assert "[[guidance]] #2 offset: required field is missing" in message


def test_malformed_toml_gives_line_and_column(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD.replace("steps = 4", "steps = = 4")))
    assert "spec.toml" in message and "malformed TOML" in message and "line 16, column 9" in message


def test_unknown_table_is_an_error(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD + "\n[sampler]\ntype = 'x'\n"))
    assert "unknown table [sampler]" in message


def test_several_problems_are_reported_together(doubles, spec_file):
    bad = GOOD.replace("steps = 4", "stepz = 4").replace("scale = 4.0", "scale = 'big'")
    message = error_of(doubles, spec_file(bad))
    assert "2 problems" in message and "stepz" in message and "scale" in message


def test_json_specs_are_accepted(doubles, spec_file):
    path = spec_file(json.dumps(spec_dict()), name="spec.json")
    assert load_spec(path, doubles).scheduler.steps == 5


def test_malformed_json_gives_line_and_column(doubles, spec_file):
    message = error_of(doubles, spec_file('{"task": "test.generate",\n "scheduler": }', name="spec.json"))
    assert "malformed JSON" in message and "line 2" in message


def test_extends_merges_field_by_field(doubles, spec_file):
    spec_file(GOOD, name="base.toml")
    child = spec_file('extends = "base.toml"\n[scheduler]\nsteps = 9\n', name="child.toml")
    spec = load_spec(child, doubles)
    assert spec.scheduler.type == "test.ddim" and spec.scheduler.steps == 9
    assert spec.guidance[0].scale == 4.0


def test_extends_with_a_new_type_keeps_the_fields_both_types_have(doubles, spec_file):
    spec_file(GOOD, name="base.toml")
    child = spec_file('extends = "base.toml"\n[scheduler]\ntype = "test.noisy"\n', name="child.toml")
    spec = load_spec(child, doubles)
    assert spec.scheduler.type == "test.noisy" and spec.scheduler.steps == 4  # the base's, not its default 10


def test_extends_cycle_is_reported(doubles, spec_file):
    spec_file('extends = "b.toml"\n', name="a.toml")
    spec_file('extends = "a.toml"\n', name="b.toml")
    assert "cycle" in error_of(doubles, spec_file('extends = "a.toml"\n', name="c.toml"))


def test_relative_weight_paths_are_relative_to_the_file_that_names_them(doubles, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base.toml").write_text(GOOD.replace('type = "test.linear"', 'type = "test.linear"\nweights = "unet.safetensors"'))
    child = tmp_path / "child.toml"
    child.write_text('extends = "models/base.toml"\n')
    spec = load_spec(child, doubles)
    assert spec.denoiser.weights == str((tmp_path / "models" / "unet.safetensors").resolve())


def test_overrides_set_fields_index_lists_and_switch_types(doubles, spec_file):
    path = spec_file(GOOD)
    spec = load_spec(path, doubles, ["scheduler.steps=30", "guidance.0.scale=1.5", "runtime.dtype=bfloat16"])
    assert spec.scheduler.steps == 30 and spec.guidance[0].scale == 1.5 and spec.runtime.dtype == "bfloat16"
    switched = load_spec(path, doubles, {"scheduler.type": "test.noisy"})
    assert switched.scheduler.type == "test.noisy"
    message = error_of(doubles, path, ["guidance.3.scale=1"])
    assert "no item 3" in message


def test_override_errors_are_reported_like_file_errors(doubles, spec_file):
    message = error_of(doubles, spec_file(GOOD), ["scheduler.steps=abc"])
    assert "[scheduler] steps" in message and "'abc'" in message


def test_switching_sampler_needs_only_the_scheduler_type(doubles, spec_file):
    # the training schedule lives in [diffusion]; the sampler swap repeats none of it
    a = load_spec(spec_file(GOOD), doubles)
    b = load_spec(spec_file(GOOD.replace('type = "test.ddim"', 'type = "test.noisy"')), doubles)
    assert a.diffusion == b.diffusion and a.scheduler.type != b.scheduler.type
