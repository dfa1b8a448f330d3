"""``sfumato.SpecPath``: the spec fields that name files are the ones a plugin declares, whatever
their names; those are resolved against their spec file, hashed into locks and carried by
``sfumato convert``, and a plain ``str`` field keeps its value."""

from __future__ import annotations

import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch
from pydantic import BaseModel, Field

import sfumato
import sfumato_test_doubles as doubles
from sfumato.cli.convert_command import convert
from sfumato.outputs import path_fields, path_sha256, read_lock, save_image
from sfumato.replay import replay_pipeline
from sfumato.spec_paths import SpecPathMarker, local_spec_paths
from sfumato.specs import load_spec, pipeline_spec_model
from sfumato.testing import fresh_registry

NOT_A_FILE = "encoder.layers.0"


class VocabEncoder(doubles.CharEncoder):
    """The doubles' text encoder, reading a vocabulary file as a tokenizer would."""

    class Spec(doubles.CharEncoder.Spec):
        type: Literal["acme.vocab"] = "acme.vocab"
        vocab_file: sfumato.SpecPath = Field(..., description="One word per line.")
        path: str = Field(NOT_A_FILE, description="A key path inside the model, not a file.")

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.words = Path(spec.vocab_file).read_text().split()


class FileSigmas(sfumato.SigmaSchedule):
    """A sigma schedule read from a file: a SpecPath inside a scheduler's ``sigmas`` table."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["acme.file-sigmas"] = "acme.file-sigmas"
        file: sfumato.SpecPath = Field(..., description="One sigma per line.")

    def sigmas(self, formulation, steps):
        return torch.tensor([float(s) for s in Path(self.spec.file).read_text().split()][:steps])


class NestedGuidance(doubles.CFG):
    """A guidance that builds its own encoder from a table, as CLIP guidance does."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["acme.nested"] = "acme.nested"
        scale: float = Field(1.0, description="Guidance scale.")
        encoder: Annotated[dict[str, Any] | None, sfumato.ComponentTable("encoder")] = Field(
            None, description="An encoder table.")


def acme_plugin() -> types.ModuleType:
    module = types.ModuleType("acme")
    module.SFUMATO_PLUGIN_API = 1

    @sfumato.hookimpl
    def register_components(register):
        for cls in (VocabEncoder, FileSigmas, NestedGuidance):
            register(cls)

    module.register_components = register_components
    return module


@pytest.fixture
def registry():
    with fresh_registry(doubles, acme_plugin()) as registry:
        yield registry


BASE = """
task = "test.generate"

[text_encoder]
type = "acme.vocab"
weights = "chars.safetensors"
vocab_file = "vocab.txt"
path = "encoder.layers.0"

[denoiser]
type = "test.linear"
weights = "linear.safetensors"

[diffusion]
betas = "linear"

[scheduler]
type = "test.ddim"
steps = 2
"""


@pytest.fixture
def model_folder(tmp_path):
    """``models/``: a spec naming a vocabulary and weights beside it."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "spec.toml").write_text(BASE)
    (folder / "vocab.txt").write_text("red circle\n")
    torch.manual_seed(0)
    sfumato.save_weights(doubles.CharEncoder.from_spec({}).state_dict(), folder / "chars.safetensors")
    sfumato.save_weights(doubles.LinearDenoiser.from_spec({}).state_dict(), folder / "linear.safetensors")
    return folder


def test_a_plugins_spec_path_is_resolved_against_the_file_that_wrote_it(registry, model_folder, tmp_path):
    spec = load_spec(model_folder / "spec.toml", registry)
    assert spec.text_encoder.vocab_file == str((model_folder / "vocab.txt").resolve())
    assert spec.text_encoder.path == NOT_A_FILE  # a plain str named path is no path

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "child.toml").write_text('extends = "../models/spec.toml"\n\n'
                                                 '[text_encoder]\nvocab_file = "words.txt"\n')
    child = load_spec(tmp_path / "mine" / "child.toml", registry)
    assert child.text_encoder.vocab_file == str((tmp_path / "mine" / "words.txt").resolve())  # no type: the base's
    assert child.denoiser.weights == str((model_folder / "linear.safetensors").resolve())
    assert child.text_encoder.path == NOT_A_FILE


def test_builtin_names_and_urls_are_no_local_paths(registry, model_folder):
    for value in ("builtin:words", "https://example.com/vocab.txt"):
        text = BASE.replace('vocab_file = "vocab.txt"', f'vocab_file = "{value}"')
        (model_folder / "spec.toml").write_text(text)
        assert load_spec(model_folder / "spec.toml", registry).text_encoder.vocab_file == value


def test_the_lock_hashes_a_plugins_spec_path_and_replay_checks_it(registry, model_folder):
    pipe = sfumato.load_pipeline(model_folder / "spec.toml")
    result = sfumato.generate(pipe, "red circle", seed=1, height=8, width=8, progress=False)
    assert result.lock["weights"] == {
        "text_encoder.weights": path_sha256(model_folder / "chars.safetensors"),
        "text_encoder.vocab_file": path_sha256(model_folder / "vocab.txt"),
        "denoiser.weights": path_sha256(model_folder / "linear.safetensors"),
    }
    assert result.lock["spec"]["text_encoder"]["path"] == NOT_A_FILE

    image = save_image(result.images[0], model_folder / "a.png", result.lock)
    assert read_lock(image)["spec"]["text_encoder"]["vocab_file"] == "vocab.txt"  # beside the image: relative
    replayed, arguments, notes = replay_pipeline(image, registry=registry)
    assert arguments["seed"] == 1 and notes == []
    assert replayed.spec.text_encoder.vocab_file == str((model_folder / "vocab.txt").resolve())

    (model_folder / "vocab.txt").write_text("blue square\n")
    with pytest.raises(sfumato.SpecError, match="text_encoder.vocab_file .* changed"):
        replay_pipeline(image, registry=registry)


def test_convert_carries_a_plugins_spec_path(registry, model_folder, tmp_path):
    spec_path = convert(model_folder / "spec.toml", tmp_path / "out", registry=registry)
    written = tomllib.loads(spec_path.read_text())
    assert written["text_encoder"]["vocab_file"] == "text_encoder.vocab_file.txt"
    assert written["text_encoder"]["path"] == NOT_A_FILE
    assert written["denoiser"]["weights"] == "denoiser.safetensors"
    assert (tmp_path / "out" / "text_encoder.vocab_file.txt").read_text() == "red circle\n"
    reloaded = sfumato.load_pipeline(spec_path)
    assert reloaded.text_encoder.words == ["red", "circle"]
    assert reloaded.spec.text_encoder.vocab_file == str((tmp_path / "out" / "text_encoder.vocab_file.txt").resolve())


class Files(BaseModel):
    """Spec paths inside a nested model, a list and a dict."""

    model_config = {"extra": "forbid"}
    one: sfumato.SpecPath | None = None
    many: list[sfumato.SpecPath] = []
    named: dict[str, sfumato.SpecPath] = {}
    label: str = ""


class Holder(sfumato.ComponentSpec):
    type: Literal["acme.holder"] = "acme.holder"
    files: Files | None = None
    tables: list[Files] = []
    sigmas: sfumato.SigmaScheduleField = "default"
    encoder: Annotated[dict[str, Any] | None, sfumato.ComponentTable("encoder")] = None


def test_the_walk_finds_spec_paths_in_nested_models_lists_dicts_and_component_tables(registry):
    data = {
        "type": "acme.holder",
        "files": {"one": "a.txt", "many": ["b.txt", "builtin:x"], "named": {"k": "c.txt"}, "label": "d.txt"},
        "tables": [{"one": "e.txt"}],
        "sigmas": {"type": "acme.file-sigmas", "file": "f.txt"},
        "encoder": {"type": "acme.vocab", "vocab_file": "g.txt", "path": "h.txt"},
    }
    assert local_spec_paths(Holder, data, registry) == [
        (("files", "one"), "a.txt"), (("files", "many", 0), "b.txt"), (("files", "named", "k"), "c.txt"),
        (("tables", 0, "one"), "e.txt"), (("sigmas", "file"), "f.txt"), (("encoder", "vocab_file"), "g.txt"),
    ]
    assert local_spec_paths(Holder, {**data, "type": "acme.other"}, registry) == []  # a table of another type


def test_a_nested_component_table_in_a_pipeline_spec_is_resolved(registry, model_folder):
    (model_folder / "spec.toml").write_text(BASE + '\n[[guidance]]\ntype = "acme.nested"\n'
                                            'encoder = { type = "acme.vocab", vocab_file = "vocab.txt" }\n')
    spec = load_spec(model_folder / "spec.toml", registry)
    assert spec.guidance[0].encoder["vocab_file"] == str((model_folder / "vocab.txt").resolve())
    assert path_fields(spec.to_dict(), type(spec), registry)["guidance.0.encoder.vocab_file"] == \
        spec.guidance[0].encoder["vocab_file"]


# -- first-party fields -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_party():
    return sfumato.Registry(local=None, entry_points=False)


def test_first_party_path_fields_are_spec_paths(first_party):
    """Every weights, tokenizer and dataset root of the first-party plugins is found (a URL and a
    ``builtin:`` name are not), including an encoder nested in CLIP guidance."""
    spec = {
        "task": {"type": "text-to-image"},
        "text_encoder": {"type": "clip-text", "weights": "/m/te.safetensors", "tokenizer": "builtin:clip"},
        "image_encoder": {"type": "clip-image", "weights": "ie.safetensors"},
        "denoiser": {"type": "unet", "weights": "https://example.com/unet.safetensors"},
        "autoencoder": {"type": "vae-kl", "weights": "vae"},
        "classifier": {"type": "noise-classifier", "weights": "c.safetensors"},
        "dataset": {"type": "imagefolder", "root": "images"},
        "guidance": [{"type": "cfg"}, {"type": "clip", "text_encoder": {"type": "clip-text", "tokenizer": "tok.json"}}],
    }
    assert path_fields(spec, pipeline_spec_model(first_party), first_party) == {
        "text_encoder.weights": "/m/te.safetensors", "image_encoder.weights": "ie.safetensors",
        "autoencoder.weights": "vae", "classifier.weights": "c.safetensors", "dataset.root": "images",
        "guidance.1.text_encoder.tokenizer": "tok.json",
    }


def test_every_first_party_field_named_like_a_file_is_a_spec_path(first_party):
    """A first-party field called weights, tokenizer or root is a SpecPath (a new one that is not
    would be silently left unresolved, unhashed and uncarried)."""
    plain = []
    for kind, entries in first_party.components.items():
        for name, entry in entries.items():
            for field_name, field in entry.cls.Spec.model_fields.items():
                if field_name in ("weights", "tokenizer", "root") and not _is_spec_path(field):
                    plain.append(f"{kind} {name!r} {field_name}")
    assert plain == []


def _is_spec_path(field: Any) -> bool:
    markers = [*field.metadata, *(m for arg in getattr(field.annotation, "__args__", ())
                                  for m in getattr(arg, "__metadata__", ()))]
    return any(isinstance(m, SpecPathMarker) for m in markers)
