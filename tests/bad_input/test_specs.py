"""Bad spec files, ``--set`` overrides and spec values: ``validate``, ``fill``, ``schema`` and the
specs that ``generate`` and ``train`` read all exit 2 naming the file, the override or the table
and field; and the spec rules that used to give a silently wrong result (untrained components,
``type`` changes that reset fields, lax numbers and booleans) hold."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import sfumato
from bad_input.harness import Case, check
from sfumato.runtime import available_devices
from sfumato.specs import MAX_EXTENDS_DEPTH, load_spec
from sfumato_test_doubles import spec_dict

#: A complete class-conditional pixel pipeline of first-party components, tiny and untrained.
TINY = """\
task = { type = "class-to-image", height = 8, width = 8 }

[autoencoder]
type = "identity"

[denoiser]
type = "unet"
in_channels = 3
out_channels = 3
block_out_channels = [8, 16]
attention = [false, false]
mid_attention = false
norm_num_groups = 4
num_classes = 2
null_class = true

[diffusion]
betas = "linear"
beta_start = 0.0001
beta_end = 0.02

[scheduler]
type = "ddim"
steps = 2

[[guidance]]
type = "cfg"
scale = 2.0
"""

#: TINY as a training spec (on the bundled digits).
TRAIN_DIFFUSION = TINY.replace('task = { type = "class-to-image", height = 8, width = 8 }',
                               'task = { type = "train-diffusion", conditioning = "class" }') + '\n[dataset]\ntype = "digits"\n'

#: A device this machine lacks whatever it has: plain cuda without CUDA, else one index too many.
MISSING_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


def files(**contents: str | bytes | None) -> Callable[[Path], None]:
    """A setup writing each ``name=content`` (None makes a folder)."""

    def setup(root: Path) -> None:
        for name, content in contents.items():
            path = root / name
            if content is None:
                path.mkdir()
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")

    return setup


def tiny(old: str = "", new: str = "", extra: str = "") -> Callable[[Path], None]:
    """``spec.toml``: TINY with ``old`` replaced by ``new`` (which must occur) and ``extra`` appended."""
    assert not old or old in TINY, old
    return files(**{"spec.toml": (TINY.replace(old, new) if old else TINY) + extra})


def extends_chain(length: int) -> Callable[[Path], None]:
    """``s0.toml`` extends ``s1.toml`` ... extends ``s{length - 1}.toml``, which is TINY."""

    def setup(root: Path) -> None:
        for i in range(length - 1):
            (root / f"s{i}.toml").write_text(f'extends = "s{i + 1}.toml"\n')
        (root / f"s{length - 1}.toml").write_text(TINY)

    return setup


def shapes_without_denoiser_weights(root: Path) -> None:
    base = sfumato.get_registry().model("shapes").spec_path
    (root / "spec.toml").write_text(f'extends = "{base.as_posix()}"\n\n[denoiser]\nweights = ""\n')


GENERATE = ["generate", "--label", "1", "--out", "out.png", "--no-progress", "--spec"]

CASES = [
    # -- reading spec files ---------------------------------------------------------------------
    Case("missing-file", ["validate", "nope.toml"], ["nope.toml", "not found"]),
    Case("folder-as-spec", ["validate", "specs"], ["specs", "folder", "not a spec file"], files(specs=None)),
    Case("fill-folder-as-spec", ["fill", "specs"], ["specs", "folder"], files(specs=None)),
    Case("invalid-utf8-toml", ["validate", "spec.toml"], ["spec.toml", "not UTF-8", "0xe9"],
         files(**{"spec.toml": TINY.encode() + b"# caf\xe9\n"})),
    Case("invalid-utf8-json", ["validate", "spec.json"], ["spec.json", "not UTF-8", "0xff"],
         files(**{"spec.json": b'{"task": "\xff"}'})),
    Case("json-top-level-array", ["validate", "spec.json"], ["spec.json", "top level", "an array"],
         files(**{"spec.json": '[{"task": "text-to-image"}]'})),
    Case("json-top-level-string", ["validate", "spec.json"], ["spec.json", "top level", "a string"],
         files(**{"spec.json": '"text-to-image"'})),
    Case("json-top-level-null", ["fill", "spec.json"], ["spec.json", "top level", "null"], files(**{"spec.json": "null"})),
    Case("json-nested-too-deep", ["validate", "spec.json"], ["spec.json", "nested too deeply"],
         files(**{"spec.json": '{"task": ' + "[" * 100_000 + "]" * 100_000 + "}"})),
    Case("malformed-toml", ["validate", "spec.toml"], ["spec.toml", "malformed TOML", "line 3"],
         tiny('[autoencoder]', '[autoencoder')),
    Case("extends-chain-1500-deep", ["validate", "s0.toml"], ["s0.toml", "'extends' chain", str(MAX_EXTENDS_DEPTH)],
         extends_chain(1500)),
    Case("extends-missing-file", ["validate", "child.toml"], ["child.toml", "'extends'", "base.toml", "not found"],
         files(**{"child.toml": 'extends = "base.toml"\n'})),
    Case("extends-missing-two-deep", ["validate", "a.toml"], ["b.toml", "'extends'", "c.toml", "not found"],
         files(**{"a.toml": 'extends = "b.toml"\n', "b.toml": 'extends = "c.toml"\n'})),
    Case("extends-a-folder", ["validate", "child.toml"], ["child.toml", "'extends'", "models", "folder"],
         files(**{"child.toml": 'extends = "models"\n', "models": None})),
    Case("extends-invalid-utf8-base", ["validate", "child.toml"], ["base.toml", "not UTF-8"],
         files(**{"child.toml": 'extends = "base.toml"\n', "base.toml": b"task = '\xc3'\n"})),
    Case("extends-not-a-string", ["validate", "spec.toml"], ["spec.toml", "'extends' must be a path string"],
         files(**{"spec.toml": "extends = 5\n"})),
    Case("extends-itself", ["validate", "spec.toml"], ["cycle", "spec.toml"], files(**{"spec.toml": 'extends = "spec.toml"\n'})),
    # -- --set overrides ------------------------------------------------------------------------
    Case("set-into-a-scalar", ["validate", "spec.toml", "--set", "runtime.device.x=1"],
         ["--set runtime.device.x=1", "runtime.device", "not a table"], tiny(extra='\n[runtime]\ndevice = "cpu"\n')),
    Case("set-into-a-default-scalar", ["validate", "spec.toml", "--set", "runtime.device.x=1"],
         ["--set runtime.device.x=1", "[runtime] device", "valid string"], tiny()),
    Case("set-into-a-list-value", ["validate", "spec.toml", "--set", "denoiser.attention.0.x=1"],
         ["--set denoiser.attention.0.x=1", "denoiser.attention.0", "not a table"], tiny()),
    Case("set-index-out-of-range", ["validate", "spec.toml", "--set", "guidance.3.scale=1"],
         ["--set guidance.3.scale=1", "no item 3", "guidance"], tiny()),
    Case("set-last-index-out-of-range", ["validate", "spec.toml", "--set", "denoiser.attention.5=true"],
         ["--set denoiser.attention.5=true", "no item 5", "0 to 1"], tiny()),
    Case("set-index-into-a-missing-list", ["validate", "spec.toml", "--set", "guidance.0.scale=1"],
         ["--set guidance.0.scale=1", "no item 0", "no guidance"], tiny("[[guidance]]\ntype = \"cfg\"\nscale = 2.0\n", "")),
    Case("set-index-not-a-number", ["validate", "spec.toml", "--set", "guidance.first.scale=1"],
         ["--set guidance.first.scale=1", "no item first"], tiny()),
    Case("set-index-negative", ["validate", "spec.toml", "--set", "guidance.-1.scale=1"],
         ["--set guidance.-1.scale=1", "no item -1"], tiny()),
    Case("set-empty-key", ["validate", "spec.toml", "--set", "=3"], ["--set =3", "empty key"], tiny()),
    Case("set-empty-key-part", ["validate", "spec.toml", "--set", "scheduler..steps=3"],
         ["--set scheduler..steps=3", "empty part"], tiny()),
    Case("set-without-equals", ["fill", "spec.toml", "--set", "scheduler.steps"],
         ["--set scheduler.steps", "table.field=value"], tiny()),
    Case("set-bad-value-names-the-override", ["validate", "spec.toml", "--set", "scheduler.steps=abc"],
         ["--set scheduler.steps=abc", "[scheduler] steps", "'abc'"], tiny()),
    Case("set-unknown-table", ["validate", "spec.toml", "--set", "sampler.steps=3"],
         ["--set sampler.steps=3", "unknown table [sampler]"], tiny()),
    Case("set-unknown-type", ["validate", "spec.toml", "--set", "scheduler.type=dpm++"],
         ["--set scheduler.type=dpm++", "unknown scheduler type 'dpm++'", "'ddim'"], tiny()),
    Case("set-nan-scale", ["validate", "spec.toml", "--set", "guidance.0.scale=nan"],
         ["--set guidance.0.scale=nan", "[[guidance]] #1 scale", "finite"], tiny()),
    Case("set-bool-steps", ["fill", "spec.toml", "--set", "scheduler.steps=true"],
         ["--set scheduler.steps=true", "[scheduler] steps", "valid integer"], tiny()),
    # -- [runtime] device -----------------------------------------------------------------------
    Case("device-cuda-missing", ["validate", "spec.toml"], ["[runtime] device", MISSING_CUDA, "cpu"],
         tiny(extra=f'\n[runtime]\ndevice = "{MISSING_CUDA}"\n')),
    Case("device-tpu", ["validate", "spec.toml"], ["[runtime] device", "unknown device 'tpu:7'", "auto, cpu"],
         tiny(extra='\n[runtime]\ndevice = "tpu:7"\n')),
    Case("device-cuda-99-by-set", ["validate", "spec.toml", "--set", "runtime.device=cuda:99"],
         ["--set runtime.device=cuda:99", "[runtime] device", "'cuda:99' is not available"], tiny()),
    Case("device-mps-missing", ["validate", "spec.toml"], ["[runtime] device", "'mps'"],
         tiny(extra='\n[runtime]\ndevice = "mps"\n')),
    # -- [diffusion] ----------------------------------------------------------------------------
    Case("betas-swapped", ["validate", "spec.toml"], ["[diffusion]", "beta_start (0.02)", "beta_end (0.0001)"],
         tiny("beta_start = 0.0001\nbeta_end = 0.02", "beta_start = 0.02\nbeta_end = 0.0001")),
    Case("betas-equal", ["validate", "spec.toml"], ["[diffusion]", "beta_start", "smaller than beta_end"],
         tiny("beta_start = 0.0001", "beta_start = 0.02")),
    Case("betas-swapped-scaled-linear", ["validate", "spec.toml"], ["[diffusion]", "beta_start"],
         tiny('betas = "linear"\nbeta_start = 0.0001\nbeta_end = 0.02',
              'betas = "scaled_linear"\nbeta_start = 0.012\nbeta_end = 0.00085')),
    Case("beta-start-nan", ["validate", "spec.toml"], ["[diffusion] beta_start", "finite"],
         tiny("beta_start = 0.0001", "beta_start = nan")),
    # -- non-finite floats ----------------------------------------------------------------------
    Case("guidance-scale-nan", ["validate", "spec.toml"], ["[[guidance]] #1 scale", "finite", "nan"],
         tiny("scale = 2.0", "scale = nan")),
    Case("guidance-scale-inf", ["validate", "spec.toml"], ["[[guidance]] #1 scale", "finite", "inf"],
         tiny("scale = 2.0", "scale = inf")),
    Case("guidance-scale-minus-inf-json", ["validate", "spec.json"], ["[[guidance]] #1 scale", "finite"],
         files(**{"spec.json": '{"guidance": [{"type": "cfg", "scale": -Infinity}]}'})),
    Case("denoiser-dropout-nan", ["validate", "spec.toml"], ["[denoiser] dropout", "finite"],
         tiny("num_classes = 2", "num_classes = 2\ndropout = nan")),
    Case("scheduler-eta-inf", ["validate", "spec.toml"], ["[scheduler] eta", "finite"], tiny("steps = 2", "steps = 2\neta = inf")),
    # -- strict numbers and booleans ------------------------------------------------------------
    Case("steps-true", ["validate", "spec.toml"], ["[scheduler] steps", "valid integer", "True"],
         tiny("steps = 2", "steps = true")),
    Case("steps-float", ["validate", "spec.toml"], ["[scheduler] steps", "valid integer", "20.0"],
         tiny("steps = 2", "steps = 20.0")),
    Case("scale-true", ["validate", "spec.toml"], ["[[guidance]] #1 scale", "valid number"], tiny("scale = 2.0", "scale = true")),
    Case("height-string", ["validate", "spec.toml"], ["[task] height", "valid integer", "'8'"],
         tiny("height = 8", 'height = "8"')),
    Case("attention-ints", ["validate", "spec.toml"], ["[denoiser] attention.0", "valid boolean"],
         tiny("attention = [false, false]", "attention = [0, 0]")),
    Case("null-class-string", ["validate", "spec.toml"], ["[denoiser] null_class", "valid boolean", "'yes'"],
         tiny("null_class = true", 'null_class = "yes"')),
    Case("compile-one", ["validate", "spec.toml"], ["[runtime] compile", "valid boolean"],
         tiny(extra="\n[runtime]\ncompile = 1\n")),
    Case("threads-zero", ["validate", "spec.toml"], ["[runtime] threads", "greater than or equal to 1", "0"],
         tiny(extra="\n[runtime]\nthreads = 0\n")),
    Case("compile-scope-alone", ["validate", "spec.toml"], ["[runtime]", "compile_scope = 'denoiser'", "compile = true"],
         tiny(extra="\n[runtime]\ncompile_scope = \"denoiser\"\n")),
    Case("timesteps-true", ["validate", "spec.toml"], ["[diffusion] timesteps", "valid integer"],
         tiny('betas = "linear"', 'betas = "linear"\ntimesteps = true')),
    Case("zero-terminal-snr-int", ["validate", "spec.toml"], ["[diffusion] zero_terminal_snr", "valid boolean"],
         tiny('betas = "linear"', 'betas = "linear"\nzero_terminal_snr = 1')),
    Case("cfg-interval-bools", ["validate", "spec.toml"], ["[[guidance]] #1 interval.0", "valid number"],
         tiny("scale = 2.0", "scale = 2.0\ninterval = [true, 1]")),
    Case("clip-architecture-layers-true", ["validate", "spec.toml"], ["[text_encoder] architecture.text.layers", "valid integer"],
         files(**{"spec.toml": '[text_encoder]\ntype = "clip-text"\n[text_encoder.architecture.text]\nlayers = true\n'})),
    Case("dataset-length-true", ["validate", "spec.toml"], ["[dataset] length", "valid integer"],
         files(**{"spec.toml": '[dataset]\ntype = "shapes"\nlength = true\n'})),
    # -- every problem at once ------------------------------------------------------------------
    Case("three-problems-two-unknown-types", ["validate", "spec.toml"],
         ["3 problems", "[scheduler] type", "'dpm++'", "[[guidance]] #1 type", "'cfgg'", "[task] height"],
         files(**{"spec.toml": TINY.replace('type = "ddim"', 'type = "dpm++"').replace('type = "cfg"', 'type = "cfgg"')
                  .replace("height = 8", 'height = "big"')})),
    Case("docs-two-problems", ["validate", "spec.toml"], ["2 problems", "unknown scheduler type 'dpm++'", "'high'"],
         files(**{"spec.toml": TINY.replace('type = "ddim"', 'type = "dpm++"').replace("scale = 2.0", 'scale = "high"')})),
    Case("unknown-type-not-a-string", ["validate", "spec.toml"], ["[scheduler] type", "unknown scheduler type '[1]'"],
         tiny('type = "ddim"', "type = [1]")),
    # -- fill --out -----------------------------------------------------------------------------
    Case("fill-out-a-folder", ["fill", "spec.toml", "--out", "filled"], ["--out", "filled", "folder"],
         files(**{"spec.toml": TINY, "filled": None})),
    Case("fill-out-a-new-folder", ["fill", "spec.toml", "--out", "newdir/"], ["--out", "newdir/", "folder"], tiny()),
    Case("fill-out-under-a-file", ["fill", "spec.toml", "--out", "spec.toml/sub/filled.toml"],
         ["--out", "spec.toml/sub/filled.toml", "is a file, not a folder"], tiny()),
    Case("fill-invalid-spec-writes-nothing", ["fill", "spec.toml", "--out", "filled.toml"], ["[scheduler] steps"],
         tiny("steps = 2", "steps = true")),
    # -- schema ---------------------------------------------------------------------------------
    Case("schema-unknown-kind", ["schema", "--kind", "sampler"], ["--kind", "'sampler' is not a component kind", "scheduler"]),
    # -- specs given to generate ----------------------------------------------------------------
    Case("generate-untrained-denoiser", GENERATE + ["spec.toml"],
         ["spec.toml", "[denoiser] 'unet' names no weights", "random initialisation", "allow_untrained"], tiny()),
    Case("generate-untrained-empty-weights", GENERATE + ["spec.toml"], ["[denoiser] 'unet'", "no weights"],
         tiny("num_classes = 2", 'num_classes = 2\nweights = ""')),
    Case("generate-extends-model-without-denoiser-weights", ["generate", "a red circle", "--no-progress", "--spec", "spec.toml"],
         ["spec.toml", "[denoiser] 'unet' names no weights", "allow_untrained"], shapes_without_denoiser_weights),
    Case("generate-device-tpu", GENERATE + ["spec.toml"], ["[runtime] device", "tpu:7"],
         tiny(extra='\n[runtime]\ndevice = "tpu:7"\nallow_untrained = true\n')),
    Case("generate-betas-swapped", GENERATE + ["spec.toml"], ["[diffusion]", "beta_start"],
         tiny("beta_start = 0.0001\nbeta_end = 0.02", "beta_start = 0.02\nbeta_end = 0.0001")),
    Case("generate-set-into-a-scalar", GENERATE + ["spec.toml", "--set", "scheduler.steps.x=1"],
         ["--set scheduler.steps.x=1", "scheduler.steps", "not a table"], tiny()),
    Case("generate-invalid-utf8", GENERATE + ["spec.toml"], ["spec.toml", "not UTF-8"], files(**{"spec.toml": b"\xfe\xff"})),
    Case("generate-json-top-level-array", GENERATE + ["spec.json"], ["spec.json", "top level"], files(**{"spec.json": "[]"})),
    Case("generate-extends-missing", GENERATE + ["spec.toml"], ["spec.toml", "'extends'", "gone.toml"],
         files(**{"spec.toml": 'extends = "gone.toml"\n'})),
    Case("generate-steps-true", GENERATE + ["spec.toml"], ["[scheduler] steps", "valid integer"], tiny("steps = 2", "steps = true")),
    # -- specs given to train -------------------------------------------------------------------
    Case("train-extends-missing", ["train", "spec.toml", "--out", "run"], ["spec.toml", "'extends'", "gone.toml"],
         files(**{"spec.toml": 'extends = "gone.toml"\n'})),
    Case("train-dataset-length-true", ["train", "spec.toml", "--out", "run"], ["[dataset] length", "valid integer"],
         files(**{"spec.toml": 'task = "train-vae"\n[dataset]\ntype = "shapes"\nlength = true\n[autoencoder]\ntype = "vae-kl"\n'})),
    Case("train-betas-swapped", ["train", "spec.toml", "--out", "run"], ["[diffusion]", "beta_start"],
         files(**{"spec.toml": TRAIN_DIFFUSION.replace("beta_start = 0.0001\nbeta_end = 0.02", "beta_start = 0.02\nbeta_end = 0.0001")})),
    Case("train-set-index-out-of-range", ["train", "spec.toml", "--out", "run", "--set", "guidance.2.scale=1"],
         ["--set guidance.2.scale=1", "no item 2"], tiny()),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_spec_input_exits_2_naming_it(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


def test_unreadable_spec_file_names_it(tmp_path, capsys, monkeypatch):
    """A file the user may not read (root reads everything, so the refusal is simulated)."""
    read_bytes = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path.name == "spec.toml":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    case = Case("unreadable", ["validate", "spec.toml"], ["spec.toml", "cannot read", "permission denied"], tiny())
    check(case, tmp_path, capsys, monkeypatch)


def test_override_errors_name_the_override_not_the_file(tmp_path, capsys, monkeypatch):
    case = Case("set-steps", ["validate", "spec.toml", "--set", "scheduler.steps=abc"], ["[scheduler] steps"], tiny())
    message = check(case, tmp_path, capsys, monkeypatch)
    assert message.startswith("sfumato: error: --set scheduler.steps=abc: ") and "spec.toml" not in message


def test_file_and_override_problems_each_name_their_source(tmp_path, capsys, monkeypatch):
    case = Case("mixed", ["validate", "spec.toml", "--set", "guidance.0.scale=big"], ["2 problems"],
                tiny("steps = 2", "steps = true"))
    message = check(case, tmp_path, capsys, monkeypatch)
    assert message.startswith("sfumato: error: spec.toml: 2 problems")
    lines = message.splitlines()
    assert any("[scheduler] steps" in line and "--set" not in line for line in lines)
    assert any("[[guidance]] #1 scale" in line and line.endswith("(from --set guidance.0.scale=big)") for line in lines)


# -- a type change keeps the fields both types have -----------------------------------------------


@pytest.fixture
def registry():
    """The process-wide registry of the installed plugins (validators may consult it too)."""
    return sfumato.get_registry()


#: What ``spec_from_checkpoint`` makes of a 512-pixel Stable Diffusion checkpoint (the part that matters).
SD_LIKE = {
    "task": {"type": "text-to-image", "height": 512, "width": 512},
    "diffusion": {"betas": "scaled_linear"},
    "scheduler": {"type": "euler-ancestral", "steps": 20, "eta": 0.5, "sigmas": "default"},
    "guidance": [{"type": "cfg", "scale": 7.5, "rescale": 0.5}],
}


def test_set_scheduler_type_keeps_steps_and_drops_the_old_types_fields(registry):
    spec = load_spec(SD_LIKE, registry, ["scheduler.type=ddpm"])
    assert spec.scheduler.type == "ddpm" and spec.scheduler.steps == 20  # not ddpm's default 1000
    assert not {"eta", "sigmas"} & set(spec.scheduler.model_dump())  # ddpm has neither: dropped, not an error


@pytest.mark.parametrize("override", [["task.type=image-to-image"], ["task=image-to-image"], {"task.type": "image-to-image"}])
def test_set_task_type_keeps_the_image_size(registry, override):
    spec = load_spec(SD_LIKE, registry, override)
    assert spec.task.type == "image-to-image" and (spec.task.height, spec.task.width) == (512, 512)


def test_set_guidance_type_drops_fields_the_new_type_lacks(registry):
    spec = load_spec(SD_LIKE, registry, ["guidance.0.type=classifier"])
    assert spec.guidance[0].type == "classifier" and spec.guidance[0].scale == 7.5
    assert "rescale" not in spec.guidance[0].model_dump()


def test_extends_with_another_type_keeps_the_shared_fields(registry, tmp_path):
    (tmp_path / "base.toml").write_text(TINY.replace('type = "ddim"\nsteps = 2', 'type = "euler-ancestral"\nsteps = 7\neta = 0.5\nsigmas = "default"'))
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n\n[scheduler]\ntype = "ddim"\n\n[task]\ntype = "unconditional"\n')
    spec = load_spec(tmp_path / "child.toml", registry)
    assert (spec.scheduler.type, spec.scheduler.steps, spec.scheduler.eta) == ("ddim", 7, 0.5)  # sigmas dropped
    assert (spec.task.type, spec.task.height) == ("unconditional", 8)


def test_fill_after_a_type_change_writes_the_kept_fields(tmp_path, capsys, monkeypatch):
    (tmp_path / "spec.toml").write_text(TINY.replace("steps = 2", "steps = 20"))
    monkeypatch.chdir(tmp_path)
    assert sfumato.cli.main(["fill", "spec.toml", "--set", "scheduler.type=ddpm", "--out", "filled.toml"]) == 0
    filled = (tmp_path / "filled.toml").read_text()
    assert 'type = "ddpm"' in filled and "steps = 20" in filled


# -- strict numbers still take what they should -----------------------------------------------------


def test_ints_are_valid_floats_and_toml_arrays_valid_tuples(registry):
    spec = load_spec({
        "diffusion": {"beta_start": 0.0001, "beta_end": 1e-2},
        "guidance": [{"type": "cfg", "scale": 5, "interval": [0, 1]}],
        "dataset": {"type": "shapes", "background": [0, 10, 255], "length": 3},
        "scheduler": {"type": "ddim", "steps": 4, "eta": 0},
    }, registry)
    assert spec.guidance[0].scale == 5.0 and spec.guidance[0].interval == (0.0, 1.0)
    assert spec.dataset.background == (0, 10, 255) and spec.scheduler.steps == 4
    assert sfumato.specs.validate_spec(spec.to_dict(), registry) == spec  # what fill writes validates again


def test_an_extends_chain_as_long_as_allowed_reads(tmp_path, registry):
    extends_chain(MAX_EXTENDS_DEPTH)(tmp_path)
    assert load_spec(tmp_path / "s0.toml", registry).scheduler.steps == 2


# -- [runtime] device -------------------------------------------------------------------------------


def test_cuda_devices_are_checked_against_the_ones_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices()[:5] == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    assert sfumato.RuntimeSpec(device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match=r"'cuda:2' is not available on this machine; it has: auto, cpu, cuda, cuda:0, cuda:1"):
        sfumato.RuntimeSpec(device="cuda:2")


# -- untrained components ---------------------------------------------------------------------------


def test_allow_untrained_builds_and_generates_on_purpose(tmp_path, capsys, monkeypatch):
    (tmp_path / "spec.toml").write_text(TINY + "\n[runtime]\nallow_untrained = true\n")
    monkeypatch.chdir(tmp_path)
    code = sfumato.cli.main(GENERATE + ["spec.toml"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out.png").is_file()


def test_training_specs_build_untrained_components(registry, tmp_path):
    """A training task starts from random weights: a pipeline of its spec is no refusal."""
    (tmp_path / "train.toml").write_text(TRAIN_DIFFUSION)
    pipe = sfumato.Pipeline.load(str(tmp_path / "train.toml"), registry=registry)
    assert pipe.denoiser is not None and pipe.denoiser.spec.weights is None


def test_components_without_parameters_need_no_weights(doubles):
    """The doubles' identity autoencoder has a ``weights`` field but nothing to load into."""
    spec = spec_dict(runtime={})
    with pytest.raises(sfumato.SpecError) as info:
        sfumato.Pipeline.load(spec, registry=doubles)
    message = str(info.value)
    assert "[text_encoder] 'test.chars' and [denoiser] 'test.linear' name no weights" in message
    assert "autoencoder" not in message
