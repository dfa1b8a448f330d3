"""Plugins declare spec tables beyond the core's (``register_spec_tables``), and components in any
table add to a call's conditioning (``extra_conditioning``) or run beside every denoiser call
(``wrap_denoiser``); ``Conditioning.extras`` carries what they add through guidance's batching."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import sfumato
from sfumato.conditioners import ConditioningRequest
from sfumato.specs import load_spec, spec_json_schema
from sfumato_test_doubles import spec_dict


# -- Conditioning.extras ----------------------------------------------------------------------


def test_extras_follow_repeat_select_to_and_cat():
    cond = sfumato.Conditioning(tokens=torch.zeros(2, 3, 4), extras={"time_ids": torch.tensor([[1.0], [2.0]])})
    cond = cond.with_extras({"text_embeds": torch.tensor([[5.0], [6.0]])})
    repeated = cond.repeat(2)
    assert repeated.extras["time_ids"].flatten().tolist() == [1, 1, 2, 2]
    assert repeated.select(slice(1, 3)).extras["text_embeds"].flatten().tolist() == [5, 6]
    assert cond.to(dtype=torch.float64).extras["time_ids"].dtype == torch.float64
    joined = sfumato.Conditioning.cat([cond, cond])
    assert joined.extras["text_embeds"].flatten().tolist() == [5, 6, 5, 6]
    assert joined.batch_size == 4


def test_with_extras_gives_the_negative_its_own_or_the_same():
    cond = sfumato.Conditioning(tokens=torch.ones(1, 2, 2), negative=sfumato.Conditioning(tokens=torch.zeros(1, 2, 2)))
    same = cond.with_extras({"a": torch.ones(1, 1)})
    assert same.negative.extras["a"].item() == 1
    own = cond.with_extras({"a": torch.ones(1, 1)}, negative={"a": torch.zeros(1, 1)})
    assert own.extras["a"].item() == 1 and own.negative.extras["a"].item() == 0


def test_cat_refuses_parts_with_different_extras():
    with pytest.raises(ValueError, match="different extras"):
        sfumato.Conditioning.cat([sfumato.Conditioning(extras={"a": torch.ones(1)}), sfumato.Conditioning()])


# -- a plugin with its own tables ---------------------------------------------------------------


class Widget(sfumato.Component, nn.Module):
    """The interface of a new kind, ``widget``: a side network beside the denoiser."""

    kind: ClassVar[str] = "widget"


class ShiftWidget(Widget):
    """Adds ``shift`` to every denoiser output, from the step ``start`` on; reads an ``offset``
    call input into the conditioning's extras."""

    call_inputs = ("offset",)

    class Spec(sfumato.ComponentSpec):
        type: Literal["acme.shift"] = "acme.shift"
        shift: float = Field(1.0, description="Added to the denoiser's output.")

    def __init__(self, spec):
        nn.Module.__init__(self)
        self.spec = spec

    def extra_conditioning(self, cond, request: ConditioningRequest):
        offset = torch.full((request.batch_size, 1), float(request.inputs.get("offset", 0.0)))
        return cond.with_extras({"acme.offset": offset})

    def wrap_denoiser(self, denoiser, context):
        def call(x, t, cond):
            extra = cond.extras["acme.offset"][:, :, None, None] + self.spec.shift
            return denoiser(x, t, cond) + extra
        return call


def acme_plugin() -> types.ModuleType:
    module = types.ModuleType("acme_widgets")
    module.SFUMATO_PLUGIN_API = 1

    @sfumato.hookimpl
    def register_spec_tables(register):
        register("widgets", Widget, many=True, description="side networks")
        register("text_encoder_2", "encoder", description="a second text encoder")

    @sfumato.hookimpl
    def register_components(register):
        register(ShiftWidget)

    module.register_spec_tables, module.register_components = register_spec_tables, register_components
    return module


@pytest.fixture
def acme(doubles):
    info = doubles.add_plugin("acme", acme_plugin(), "local")
    assert info.status == "ok", info.error
    return doubles


def test_declared_tables_are_listed_with_their_kinds(acme):
    tables = acme.spec_tables
    assert (tables["widgets"].kind, tables["widgets"].many) == ("widget", True)
    assert (tables["text_encoder_2"].kind, tables["text_encoder_2"].many) == ("encoder", False)
    assert acme.types("widget") == ["acme.shift"]
    assert acme.plugins()[-1].provides["spec table"] == ["widgets", "text_encoder_2"]


def test_declared_tables_validate_like_the_core_tables(acme):
    spec = load_spec(spec_dict(widgets=[{"type": "acme.shift", "shift": 2.0}],
                                       text_encoder_2={"type": "test.chars", "dim": 4}), acme)
    assert spec.widgets[0].shift == 2.0 and spec.text_encoder_2.dim == 4
    with pytest.raises(sfumato.SpecError) as error:
        load_spec(spec_dict(widgets=[{"type": "acme.shift"}, {"type": "acme.shift", "shift": "x"}],
                                    text_encoder_2={"type": "nope"}), acme)
    text = str(error.value)
    assert "[[widgets]] #2 shift: Input should be a valid number" in text
    assert "[text_encoder_2] type: unknown encoder type 'nope'" in text
    with pytest.raises(sfumato.SpecError, match=r"\[\[widgets\]\] must be a list of tables"):
        load_spec(spec_dict(widgets={"type": "acme.shift"}), acme)
    overridden = load_spec(spec_dict(widgets=[{"type": "acme.shift"}]), acme, ["widgets.0.shift=3"])
    assert overridden.widgets[0].shift == 3
    assert "widgets" in spec_json_schema(acme)["properties"]


def test_without_the_plugin_the_table_is_unknown(doubles):
    with pytest.raises(sfumato.SpecError, match=r"unknown table \[widgets\]"):
        load_spec(spec_dict(widgets=[{"type": "acme.shift"}]), doubles)


def test_components_of_declared_tables_condition_and_wrap_the_denoiser(acme):
    """The widget's extras ride through classifier-free guidance's batch (both halves) and its
    wrapper sees every forward: the output moves by exactly shift + offset."""
    torch.manual_seed(0)  # the same random (untrained) weights in both pipelines
    base = sfumato.Pipeline(load_spec(spec_dict(), acme), acme)
    torch.manual_seed(0)
    pipe = sfumato.Pipeline(load_spec(spec_dict(widgets=[{"type": "acme.shift", "shift": 0.5}]), acme), acme)
    assert isinstance(pipe.component("widgets")[0], ShiftWidget) and pipe.widgets == pipe.component("widgets")
    latents = torch.randn(1, 3, 8, 8)
    plain = base("ab", latents=latents, num_inference_steps=1, output_type="latent").latents
    shifted = pipe("ab", latents=latents, num_inference_steps=1, output_type="latent", offset=0.25).latents
    assert not torch.allclose(plain, shifted)
    unshifted = pipe("ab", latents=latents, num_inference_steps=1, output_type="latent", offset=-0.5).latents
    torch.testing.assert_close(plain, unshifted)  # shift + offset = 0: the wrapper adds exactly that


def test_an_input_no_component_takes_is_an_error_naming_those_that_are(acme):
    pipe = sfumato.Pipeline(load_spec(spec_dict(widgets=[{"type": "acme.shift"}]), acme), acme)
    with pytest.raises(sfumato.SpecError, match=r"control_image: no component of this pipeline takes "
                       r"'control_image'; the inputs its components take: offset \(\[\[widgets\]\] #1\)"):
        pipe("ab", control_image=1)


@pytest.mark.parametrize("table, kind, message", [
    ("denoiser", "denoiser", r"\[denoiser\] is a table of the core spec"),
    ("Bad-Name", "encoder", "lowercase letters, digits and '_'"),
    ("extra", "gizmo", "unknown kind"),
    ("extra", int, "subclasses sfumato.Component"),
])
def test_malformed_table_declarations_fail_the_plugin(doubles, table, kind, message):
    module = types.ModuleType("bad_tables")
    module.SFUMATO_PLUGIN_API = 1
    module.register_spec_tables = sfumato.hookimpl(lambda register: register(table, kind))
    info = doubles.add_plugin("bad", module, "local")
    assert info.status == "failed" and "register_spec_tables" in info.error
    assert pytest.importorskip("re").search(message, info.error), info.error
    assert doubles.spec_tables == {}


def test_two_plugins_declaring_one_table_name_both(acme):
    other = types.ModuleType("other_tables")
    other.SFUMATO_PLUGIN_API = 1
    other.register_spec_tables = sfumato.hookimpl(lambda register: register("widgets", "encoder"))
    info = acme.add_plugin("other", other, "local")
    assert info.status == "failed" and "declared by both plugin 'acme' and plugin 'other'" in info.error


def test_the_plugin_guide_example_of_extra_tables_runs(doubles, tmp_path, monkeypatch):
    """docs/plugins.md, "Extra spec tables and conditioning": its ``acme_offsets.py`` loads as a
    plugin, its list table validates and its offset reaches every forward."""
    doc = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if b.startswith("# acme_offsets.py"))
    (tmp_path / "acme_offsets.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("acme_offsets")
    info = doubles.add_plugin("acme", module, "local")
    assert info.status == "ok", info.error
    torch.manual_seed(0)
    base = sfumato.Pipeline(load_spec(spec_dict(), doubles), doubles)
    torch.manual_seed(0)
    pipe = sfumato.Pipeline(load_spec(spec_dict(offsets=[{"type": "acme.constant", "scale": 2.0}]), doubles), doubles)
    latents = torch.randn(1, 3, 8, 8)
    call = dict(latents=latents, num_inference_steps=1, output_type="latent")
    torch.testing.assert_close(pipe("ab", offset=0.0, **call).latents, base("ab", **call).latents)
    assert not torch.allclose(pipe("ab", offset=0.5, **call).latents, base("ab", **call).latents)
    with pytest.raises(sfumato.SpecError, match=r"\[\[offsets\]\] #1 scale"):
        load_spec(spec_dict(offsets=[{"type": "acme.constant", "scale": "big"}]), doubles)
    sys.modules.pop("acme_offsets", None)
