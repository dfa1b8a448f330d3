"""``sfumato generate`` with bad input: every number, ``--out`` and conditioning option checked
before any work, naming the option and what is allowed; and ``--from`` replay, which reads its lock
as the untrusted input it is (a fixed set of argument keys and types, generation tasks only,
weights that still match).

The models are the test doubles (a char-bag text encoder, a linear denoiser) saved as real weights
files beside their specs, so each case loads in milliseconds."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import sfumato
import sfumato_test_doubles as doubles
from bad_input.harness import Case, check, run_cli
from sfumato import generation
from sfumato import replay as replay_module
from sfumato.generation import ArgumentError
from sfumato.outputs import path_sha256, read_lock

TEXT_ENCODER = {"type": "test.chars", "weights": "chars.safetensors"}
DENOISER = {"type": "test.linear", "weights": "linear.safetensors"}
CLASS_DENOISER = {"type": "test.linear", "num_classes": 3, "weights": "class.safetensors"}
SIZE = {"height": 8, "width": 8}
#: Specs over the doubles (``spec_dict``: an identity autoencoder, 5 DDIM steps, CFG 2), as JSON.
SPECS = {
    "text.json": doubles.spec_dict(task={"type": "text-to-image", **SIZE}, text_encoder=TEXT_ENCODER,
                                   denoiser=DENOISER),
    "class.json": doubles.spec_dict(task={"type": "class-to-image", **SIZE}, text_encoder=None,
                                    denoiser=CLASS_DENOISER),
    "unconditional.json": doubles.spec_dict(task="unconditional", text_encoder=None, denoiser=CLASS_DENOISER),
    "plain.json": doubles.spec_dict(task="unconditional", text_encoder=None, denoiser=DENOISER),
    "latent.json": doubles.spec_dict(
        task={"type": "text-to-image", **SIZE}, text_encoder=TEXT_ENCODER, denoiser=DENOISER,
        runtime={"allow_untrained": True},  # the autoencoder: a two-level KL-VAE (downscale 2), untrained
        autoencoder={"type": "vae-kl", "latent_channels": 3, "block_out_channels": [8, 8], "layers_per_block": 1,
                     "norm_num_groups": 4},
    ),
    "train.json": doubles.spec_dict(task="train-diffusion", text_encoder=None, denoiser=DENOISER),
}


def write_models(root: Path) -> None:
    """The doubles' registry file, weights and specs in ``root``."""
    (root / "registry.toml").write_text(f'[plugins]\ntest = "{doubles.__file__}"\n')
    torch.manual_seed(0)
    sfumato.save_weights(doubles.CharEncoder.from_spec({}).state_dict(), root / "chars.safetensors")
    for name, spec in (("linear", {}), ("class", {"num_classes": 3})):
        denoiser = doubles.LinearDenoiser.from_spec(spec)
        with torch.no_grad():
            denoiser.proj.weight.mul_(0.1)
        sfumato.save_weights(denoiser.state_dict(), root / f"{name}.safetensors")
    for name, spec in SPECS.items():
        (root / name).write_text(json.dumps({table: value for table, value in spec.items() if value is not None}))


@pytest.fixture(autouse=True)
def local_registry(monkeypatch):
    """Every command loads the doubles' registry file from its scratch folder."""
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")


@pytest.fixture(scope="module")
def recorded_lock(tmp_path_factory) -> dict[str, Any]:
    """The lock of a real run of ``text.json`` (paths relative to its image)."""
    root = tmp_path_factory.mktemp("recorded")
    write_models(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("SFUMATO_REGISTRY", "registry.toml")
        try:
            code = sfumato.cli.main([*GEN, "--out", "a.png"])
        finally:
            sfumato.set_registry(None)
    assert code == 0
    return read_lock(root / "a.png")


def models(*then: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_models(root)
        for step in then:
            step(root)

    return setup


def file(name: str, content: str | bytes = b"x") -> Callable[[Path], None]:
    def write(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return write


def folder(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir()


def png_with(text: str, name: str = "lock.png") -> Callable[[Path], None]:
    """An 8x8 PNG whose ``sfumato`` text chunk is ``text``."""

    def write(root: Path) -> None:
        info = PngImagePlugin.PngInfo()
        info.add_text("sfumato", text)
        Image.new("RGB", (8, 8)).save(root / name, pnginfo=info)

    return write


#: Replay cases: (id, change to the recorded lock, needles, extra argv).
CRAFTED: list[tuple[str, Callable[[dict[str, Any]], Any], list[str], list[str]]] = [
    ("lock-not-an-object", lambda lock: [1, 2], ["malformed lock", "JSON object"], []),
    ("lock-missing-spec", lambda lock: lock.pop("spec"), ["malformed lock", "missing spec"], []),
    ("lock-missing-arguments", lambda lock: lock.pop("arguments"), ["missing arguments"], []),
    ("lock-unknown-key", lambda lock: lock.update(run="rm -rf /"), ["malformed lock", "unknown 'run'"], []),
    ("lock-spec-not-an-object", lambda lock: lock.update(spec="x"), ["spec must be an object"], []),
    ("lock-training-task", lambda lock: lock["spec"].update(task={"type": "train-diffusion"}),
     ["train-diffusion", "training task"], []),
    ("lock-unknown-task", lambda lock: lock["spec"].update(task={"type": "acme.evil"}), ["lock.png", "acme.evil"], []),
    ("lock-no-task", lambda lock: lock["spec"].pop("task"), ["names no task"], []),
    ("lock-extends", lambda lock: lock["spec"].update(extends="/etc/passwd"), ["lock.png", "extends"], []),
    ("lock-bad-spec-field", lambda lock: lock["spec"]["scheduler"].update(steps="many"),
     ["lock.png", "[scheduler]", "steps"], []),
    ("lock-unknown-argument", lambda lock: lock["arguments"].update(out="/tmp/evil.png"),
     ["malformed lock", "unknown", "'out'"], []),
    ("lock-missing-argument", lambda lock: lock["arguments"].pop("seed"), ["malformed lock", "missing seed"], []),
    ("lock-seed-a-string", lambda lock: lock["arguments"].update(seed="5"), ["seed must be an integer"], []),
    ("lock-seed-a-boolean", lambda lock: lock["arguments"].update(seed=True), ["seed must be an integer"], []),
    ("lock-seed-negative", lambda lock: lock["arguments"].update(seed=-1), ["seed", "2**64 - 1"], []),
    ("lock-num-images-huge", lambda lock: lock["arguments"].update(num_images=100_000), ["num_images", "1024"], []),
    ("lock-height-zero", lambda lock: lock["arguments"].update(height=0), ["height", "1 to 4096"], []),
    ("lock-prompt-a-number", lambda lock: lock["arguments"].update(prompt=5), ["prompt must be a string"], []),
    ("lock-labels-a-float", lambda lock: lock["arguments"].update(labels=2.5), ["labels must be an integer"], []),
    ("lock-strength-a-string", lambda lock: lock["arguments"].update(strength="1"), ["strength must be a number"], []),
    ("lock-explicit-latents", lambda lock: lock["arguments"].update(latents=True), ["explicit latents"], []),
    ("lock-weights-not-a-hash", lambda lock: lock["weights"].update({"denoiser.weights": "abc"}),
     ["weights entry", "SHA-256"], []),
    ("lock-weights-key-a-path", lambda lock: lock["weights"].update({"/etc/passwd": "0" * 64}),
     ["weights entry", "/etc/passwd"], []),
    ("lock-weights-unknown-field", lambda lock: lock["weights"].update({"classifier.weights": "0" * 64}),
     ["classifier.weights", "not a field"], []),
    ("lock-weights-changed", lambda lock: lock["weights"].update({"denoiser.weights": "0" * 64}),
     ["denoiser.weights", "changed", "--set denoiser.weights="], []),
    ("lock-weights-missing", lambda lock: lock["spec"]["denoiser"].update(weights="gone.safetensors"),
     ["denoiser.weights", "gone.safetensors: missing"], []),
    ("from-with-zero-images", lambda lock: None, ["--num-images: 0", "1 to 1024"], ["--num-images", "0"]),
    ("from-with-too-many-steps", lambda lock: None, ["--steps: 100000", "1 to 1000"], ["--steps", "100000"]),
    ("from-with-a-label-on-a-text-model", lambda lock: None, ["--label:", "not both"], ["--label", "1"]),
    ("from-over-an-existing-out", lambda lock: None, ["--out", "lock.png", "--overwrite"], ["--out", "lock.png"]),
]


def crafted(change: Callable[[dict[str, Any]], Any], lock: dict[str, Any]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_models(root)
        data = json.loads(json.dumps(lock))
        result = change(data)
        png_with(json.dumps(result if isinstance(result, list) else data))(root)

    return setup


def removed(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


GEN = ["generate", "a red circle", "--spec", "text.json", "--no-progress"]
CLASS = ["generate", "--spec", "class.json", "--no-progress"]

CASES = [
    # numbers: refused before the pipeline is loaded
    Case("num-images-zero", [*GEN, "--num-images", "0"], ["--num-images: 0", "1 to 1024"], models()),
    Case("num-images-negative", [*GEN, "--num-images", "-3"], ["--num-images: -3", "1 to 1024"], models()),
    Case("num-images-10000", [*GEN, "--num-images", "10000"], ["--num-images: 10000", "MAX_IMAGES"], models()),
    Case("num-images-not-a-number", [*GEN, "--num-images", "1.5"], ["--num-images", "invalid int"], models()),
    Case("height-zero", [*GEN, "--height", "0"], ["--height: 0", "1 to 4096"], models()),
    Case("height-negative", [*GEN, "--height", "-64"], ["--height: -64", "1 to 4096"], models()),
    Case("width-zero", [*GEN, "--width", "0"], ["--width: 0", "1 to 4096"], models()),
    Case("height-100000", [*GEN, "--height", "100000"], ["--height: 100000", "MAX_SIDE"], models()),
    Case("pixel-budget", [*GEN, "--height", "4096", "--width", "4096", "--num-images", "4"],
         ["--num-images: 4", "MAX_OUTPUT_PIXELS", "at most 2"], models()),
    Case("height-not-a-multiple-of-the-downscale", ["generate", "x", "--spec", "latent.json", "--height", "9"],
         ["--height: 9", "multiple of 2", "8 or 10"], models()),
    Case("width-smaller-than-the-downscale", ["generate", "x", "--spec", "latent.json", "--width", "1"],
         ["--width: 1", "multiple of 2", "use 2"], models()),
    Case("steps-zero", [*GEN, "--steps", "0"], ["--steps: 0", "at least 1"], models()),
    Case("steps-negative", [*GEN, "--steps", "-1"], ["--steps: -1", "at least 1"], models()),
    Case("steps-100000", [*GEN, "--steps", "100000"], ["--steps: 100000", "1 to 1000"], models()),
    Case("steps-one-past-the-timesteps", [*GEN, "--steps", "1001"], ["--steps: 1001", "1 to 1000"], models()),
    Case("seed-negative", [*GEN, "--seed", "-1"], ["--seed: -1", "0 to 18446744073709551615"], models()),
    Case("seed-2-to-the-64", [*GEN, "--seed", str(2**64)], ["--seed: 18446744073709551616", "2**64 - 1"], models()),
    Case("seed-not-a-number", [*GEN, "--seed", "abc"], ["--seed", "invalid int"], models()),
    # --out
    Case("out-a-folder", [*GEN, "--out", "outdir"], ["outdir is a folder"], models(folder("outdir"))),
    Case("out-trailing-slash", [*GEN, "--out", "newdir/"], ["newdir/ names a folder", "newdir/image.png"], models()),
    Case("out-unknown-extension", [*GEN, "--out", "x.gif"], ["--out x.gif", "'.gif'", ".png, .jpg, .jpeg, .webp"],
         models()),
    Case("out-no-extension", [*GEN, "--out", "picture"], ["--out picture", "extension"], models()),
    Case("out-exists", [*GEN, "--out", "a.png"], ["a.png exists", "--overwrite"], models(file("a.png"))),
    Case("out-under-a-file", [*GEN, "--out", "notes.txt/a.png"], ["notes.txt is a file"], models(file("notes.txt"))),
    Case("out-a-link-to-a-folder", [*GEN, "--out", "link.png", "--overwrite"], ["link.png is a folder"],
         models(folder("outdir"), lambda root: (root / "link.png").symlink_to(root / "outdir"))),
    Case("out-a-dangling-link", [*GEN, "--out", "link.png", "--overwrite"], ["link.png", "not a regular file"],
         models(lambda root: (root / "link.png").symlink_to(root / "nowhere"))),
    # conditioning the model cannot use
    Case("negative-on-a-class-model", [*CLASS, "--label", "1", "--negative", "blurry"],
         ["--negative:", "needs a prompt"], models()),
    Case("label-on-a-text-model", [*GEN, "--label", "1"], ["--label:", "prompt or labels, not both"], models()),
    Case("label-alone-on-a-text-model", ["generate", "--spec", "text.json", "--label", "1"],
         ["text-to-image", "needs prompt", "does not take labels"], models()),
    Case("label-outside-the-classes", [*CLASS, "--label", "3"], ["labels [3]", "0 to 2"], models()),
    Case("prompt-on-a-class-model", ["generate", "a cat", "--spec", "class.json"],
         ["class-to-image", "needs labels", "does not take prompt"], models()),
    Case("prompt-on-an-unconditional-class-model", ["generate", "a cat", "--spec", "unconditional.json"],
         ["the prompt", "no [text_encoder]", "give labels"], models()),
    Case("label-on-a-model-without-classes", ["generate", "--spec", "plain.json", "--label", "1"],
         ["--label:", "not class-conditional"], models()),
    Case("negative-on-an-unconditional-model", ["generate", "--spec", "plain.json", "--negative", "blurry"],
         ["--negative:", "needs a prompt"], models()),
    Case("no-prompt-for-a-text-model", ["generate", "--spec", "text.json"], ["needs prompt"], models()),
    Case("training-spec", ["generate", "x", "--spec", "train.json"], ["train-diffusion", "sfumato train"], models()),
    # --from: the image itself
    Case("from-missing", ["generate", "--from", "nope.png"], ["nope.png", "no such file"], models()),
    Case("from-not-an-image", ["generate", "--from", "junk.png"], ["junk.png", "not a readable image"],
         models(file("junk.png", "not a png"))),
    Case("from-no-lock", ["generate", "--from", "plain.png"], ["plain.png", "no sfumato lock"],
         models(lambda root: Image.new("RGB", (4, 4)).save(root / "plain.png"))),
    Case("lock-not-json", ["generate", "--from", "lock.png"], ["lock.png", "malformed lock", "not JSON"],
         models(png_with("{{{"))),
    Case("lock-nested-too-deep", ["generate", "--from", "lock.png"], ["lock.png", "malformed lock"],
         models(png_with("[" * 100_000))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_2_naming_it(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("name, change, needles, extra", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_lock_exits_2_naming_it(name, change, needles, extra, recorded_lock, tmp_path, capsys, monkeypatch):
    argv = ["generate", "--from", "lock.png", "--no-progress", *extra]
    check(Case(name, argv, needles, crafted(change, recorded_lock)), tmp_path, capsys, monkeypatch)


# -- what the fixes make work -----------------------------------------------------------------


def run_in(root: Path, argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``sfumato ARGV`` in ``root``; (exit code, stderr)."""
    monkeypatch.chdir(root)
    code, _, err = run_cli(argv, capsys)
    return code, err


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture
def scratch(tmp_path) -> Path:
    write_models(tmp_path)
    return tmp_path


def refuse_loading(monkeypatch) -> None:
    """Make loading a pipeline fail the test: the command must refuse before it."""
    def load(cls, *args, **kwargs):
        pytest.fail("the pipeline was loaded before the bad option was refused")

    monkeypatch.setattr(sfumato.Pipeline, "load", classmethod(load))
    monkeypatch.setattr(replay_module, "Pipeline", lambda *a, **k: load(None))


@pytest.mark.parametrize("extra", [
    ["--num-images", "0"], ["--height", "100000"], ["--seed", "-1"], ["--steps", "0"], ["--out", "outdir"],
    ["--out", "x.gif"], ["--out", "a.png"],
], ids=" ".join)
@pytest.mark.parametrize("source", [["a red circle", "--spec", "text.json"], ["--from", "a.png"]], ids=["spec", "from"])
def test_numbers_and_out_are_refused_before_the_pipeline_loads(source, extra, scratch, capsys, monkeypatch):
    assert run_in(scratch, [*GEN, "--out", "a.png"], capsys, monkeypatch)[0] == 0
    (scratch / "outdir").mkdir()
    refuse_loading(monkeypatch)
    code, err = run_in(scratch, ["generate", *source, *extra, "--no-progress"], capsys, monkeypatch)
    assert code == 2 and extra[0] in err, err


def test_a_full_disk_is_named_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    check(Case("disk-full", [*GEN, "--out", "a.png"], ["--out", "a.png", "no space left"], models()),
          tmp_path, capsys, monkeypatch)


def test_a_write_refused_by_the_system_is_named_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Image.Image, "save", refused)
    check(Case("write-refused", [*GEN, "--out", "a.png"], ["--out a.png", "cannot write it", "permission denied"],
               models()), tmp_path, capsys, monkeypatch)


def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import os

    allowed = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked" and allowed(path, mode))
    refuse_loading(monkeypatch)
    check(Case("out-unwritable", [*GEN, "--out", "locked/a.png"], ["--out locked/a.png", "locked", "permission denied"],
               models(folder("locked"))), tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("suffix, kind", [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_jpeg_and_webp_outputs_are_real_and_replay(suffix, kind, scratch, capsys, monkeypatch):
    assert run_in(scratch, [*GEN, "--seed", "3", "--out", "a.png"], capsys, monkeypatch)[0] == 0
    assert run_in(scratch, [*GEN, "--seed", "3", "--out", f"a{suffix}"], capsys, monkeypatch)[0] == 0
    assert Image.open(scratch / f"a{suffix}").format == kind
    assert read_lock(scratch / f"a{suffix}")["arguments"]["seed"] == 3
    assert run_in(scratch, ["generate", "--from", f"a{suffix}", "--out", "b.png", "--no-progress"],
                  capsys, monkeypatch)[0] == 0
    assert np.array_equal(pixels(scratch / "a.png"), pixels(scratch / "b.png"))


def test_overwrite_replaces_an_existing_output(scratch, capsys, monkeypatch):
    (scratch / "a.png").write_bytes(b"old")
    assert run_in(scratch, [*GEN, "--out", "a.png", "--overwrite"], capsys, monkeypatch)[0] == 0
    assert read_lock(scratch / "a.png")["arguments"]["prompt"] == "a red circle"


def test_unconditional_generation_with_cfg_runs(scratch, capsys, monkeypatch):
    """No prompt and no label, with [[guidance]] cfg: the negative is the unconditional itself."""
    for spec in ("unconditional.json", "plain.json"):
        code, err = run_in(scratch, ["generate", "--spec", spec, "--out", f"{spec}.png", "--no-progress"],
                           capsys, monkeypatch)
        assert code == 0, err


def test_unconditional_cfg_is_the_unguided_prediction(doubles):
    """Up to the float rounding of a batch of two against a batch of one."""
    base = sfumato_test_doubles_spec(task={"type": "test.generate"})
    torch.manual_seed(0)
    guided = sfumato.load_pipeline(base)
    torch.manual_seed(0)
    plain = sfumato.load_pipeline({**base, "guidance": []})
    torch.testing.assert_close(guided(seed=4).latents, plain(seed=4).latents, rtol=1e-4, atol=1e-3)


def sfumato_test_doubles_spec(**changes: Any) -> dict[str, Any]:
    spec = doubles.spec_dict(**changes)
    spec["runtime"] = {"allow_untrained": True}
    return spec


def test_large_requests_run_in_chunks_that_give_the_same_images(doubles, monkeypatch):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(sfumato_test_doubles_spec())
    whole = pipe("x", num_images=7, seed=2)
    steps = []
    monkeypatch.setattr(generation, "CHUNK_PIXELS", 3 * 8 * 8)  # three 8x8 images per chunk
    chunked = pipe("x", num_images=7, seed=2, callback=lambda event: steps.append(event.i))
    assert len(steps) == 3 * 5  # three chunks (3 + 3 + 1) of the scheduler's 5 steps
    torch.testing.assert_close(chunked.latents, whole.latents, rtol=0, atol=1e-6)
    assert len(chunked.images) == 7


def test_one_chunk_keeps_the_seeded_noise_of_one_batch(doubles):
    """Within one chunk the noise is what it always was: the seed's first draws, batch-first."""
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(sfumato_test_doubles_spec())
    noise = torch.randn((3, 3, 8, 8), generator=torch.Generator().manual_seed(9))
    assert torch.equal(pipe("x", num_images=3, seed=9).latents, pipe("x", num_images=3, latents=noise).latents)


def test_a_stochastic_sampler_in_chunks_is_reproducible(doubles, monkeypatch):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(sfumato_test_doubles_spec(scheduler={"type": "test.noisy", "steps": 3}))
    monkeypatch.setattr(generation, "CHUNK_PIXELS", 2 * 8 * 8)
    first, again = pipe("x", num_images=5, seed=1), pipe("x", num_images=5, seed=1)
    assert torch.equal(first.latents, again.latents)


@pytest.mark.parametrize("argument, value, needle", [
    ("num_images", 0, "1 to 1024"), ("seed", -1, "2**64 - 1"), ("steps", 0, "at least 1"),
    ("height", 12.5, "not a whole number"), ("steps", 5000, "1 to 1000"), ("strength", 0.0, "above 0"),
])
def test_the_python_api_names_the_argument(argument, value, needle, doubles):
    pipe = sfumato.load_pipeline(sfumato_test_doubles_spec())
    with pytest.raises(ArgumentError, match=re.escape(needle)) as caught:
        pipe("x", **{argument: value})
    assert caught.value.argument == argument


def test_replay_applies_a_new_prompt_and_seed(scratch, capsys, monkeypatch):
    assert run_in(scratch, [*GEN, "--out", "a.png"], capsys, monkeypatch)[0] == 0
    argv = ["generate", "--from", "a.png", "a blue square", "--seed", "5", "--out", "b.png", "--no-progress"]
    assert run_in(scratch, argv, capsys, monkeypatch)[0] == 0
    arguments = read_lock(scratch / "b.png")["arguments"]
    assert arguments["prompt"] == "a blue square" and arguments["seed"] == 5
    fresh = ["generate", "a blue square", "--spec", "text.json", "--seed", "5", "--out", "c.png", "--no-progress"]
    assert run_in(scratch, fresh, capsys, monkeypatch)[0] == 0
    assert np.array_equal(pixels(scratch / "b.png"), pixels(scratch / "c.png"))
    assert not np.array_equal(pixels(scratch / "a.png"), pixels(scratch / "b.png"))


def test_a_moved_run_folder_replays(tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    write_models(tmp_path / "run")
    shutil.copy(tmp_path / "run" / "registry.toml", tmp_path / "registry.toml")
    argv = ["generate", "x", "--spec", "run/text.json", "--out", "run/a.png", "--no-progress"]
    assert run_in(tmp_path, argv, capsys, monkeypatch)[0] == 0
    assert read_lock(tmp_path / "run" / "a.png")["spec"]["denoiser"]["weights"] == "linear.safetensors"
    (tmp_path / "run").rename(tmp_path / "moved")
    code, err = run_in(tmp_path, ["generate", "--from", "moved/a.png", "--out", "b.png", "--no-progress"],
                       capsys, monkeypatch)
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "moved" / "a.png"), pixels(tmp_path / "b.png"))


def test_set_redirects_moved_weights_on_replay(scratch, capsys, monkeypatch):
    (scratch / "out").mkdir()
    assert run_in(scratch, [*GEN, "--out", "out/a.png"], capsys, monkeypatch)[0] == 0
    (scratch / "elsewhere").mkdir()
    (scratch / "linear.safetensors").rename(scratch / "elsewhere" / "linear.safetensors")
    replay = ["generate", "--from", "out/a.png", "--no-progress"]
    code, err = run_in(scratch, [*replay, "--out", "b.png"], capsys, monkeypatch)
    assert code == 2 and "denoiser.weights" in err and "missing" in err
    code, err = run_in(scratch, [*replay, "--out", "b.png", "--set", "denoiser.weights=elsewhere/linear.safetensors"],
                       capsys, monkeypatch)
    assert code == 0 and "note" not in err, err
    assert np.array_equal(pixels(scratch / "out" / "a.png"), pixels(scratch / "b.png"))
    code, err = run_in(scratch, [*replay, "--out", "c.png", "--set", "denoiser.weights=class.safetensors",
                                 "--set", "denoiser.num_classes=3"], capsys, monkeypatch)
    assert code == 0 and "note: denoiser.weights" in err and "sha256 differs" in err, err


def test_locks_hash_weights_folders(scratch, capsys, monkeypatch):
    """A component whose weights are a folder (a diffusers model) is hashed as a folder, and a
    changed file in it stops a replay."""
    weights = scratch / "vae"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"first")
    argv = [*GEN, "--set", "autoencoder.type=test.identity", "--set", "autoencoder.weights=vae", "--out", "a.png"]
    assert run_in(scratch, argv, capsys, monkeypatch)[0] == 0
    lock = read_lock(scratch / "a.png")
    assert lock["weights"]["autoencoder.weights"] == path_sha256(weights)
    assert lock["spec"]["autoencoder"]["weights"] == "vae"
    (weights / ".cache").write_text("ignored")
    replay = ["generate", "--from", "a.png", "--no-progress"]
    assert run_in(scratch, [*replay, "--out", "b.png"], capsys, monkeypatch)[0] == 0
    (weights / "model.safetensors").write_bytes(b"second")
    code, err = run_in(scratch, [*replay, "--out", "c.png"], capsys, monkeypatch)
    assert code == 2 and "autoencoder.weights" in err and "changed" in err




def test_a_folder_of_too_many_files_is_not_hashed(tmp_path, monkeypatch):
    from sfumato import outputs

    monkeypatch.setattr(outputs, "MAX_FOLDER_FILES", 3)
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(b"x")
    with pytest.raises(sfumato.SfumatoError, match="more than 3 files"):
        path_sha256(tmp_path)
