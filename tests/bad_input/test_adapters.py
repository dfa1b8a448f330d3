"""Adapters with bad input: ``sfumato generate --lora FILE[:SCALE]`` and ``[[adapters]]`` tables
(LoRA, textual inversion). A file that is no LoRA, has keys sfumato does not read, was made for
another architecture or does not fit the model is an error naming the file and listing the keys;
pickle files are refused. Everything about the file alone is checked before the model loads.

The model is the built-in ``shapes`` (a U-Net of widths 48 and 96, cross-attention to a 64-wide
CLIP text encoder); spec cases extend its spec. The Python API's cases are ordinary tests below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

import sfumato
import sfumato_models
from bad_input.harness import Case, check

MODELS = Path(sfumato_models.__file__).parent
SHAPES_SPEC = MODELS / "shapes" / "spec.toml"
#: A cross-attention key projection of the shapes U-Net: weight [96, 64].
TO_K = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"


def lora(name: str, down: tuple[int, ...], up: tuple[int, ...], layout: str = "kohya") -> dict[str, torch.Tensor]:
    """One LoRA layer's tensors in ``layout`` (the module named with dots)."""
    if layout == "kohya":
        key = "lora_unet_" + name.replace(".", "_")
        return {f"{key}.lora_down.weight": torch.zeros(down), f"{key}.lora_up.weight": torch.zeros(up),
                f"{key}.alpha": torch.tensor(1.0)}
    return {f"unet.{name}.lora_A.weight": torch.zeros(down), f"unet.{name}.lora_B.weight": torch.zeros(up)}


GOOD = lora(TO_K, (2, 64), (96, 2))


def tensors(name: str, state: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    return lambda root: save_file(state, str(root / name))


def raw(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(content)


def pickle(name: str, obj: object) -> Callable[[Path], None]:
    return lambda root: torch.save(obj, root / name)


def spec(*adapters: dict) -> Callable[[Path], None]:
    """``spec.json``: the shapes model with these ``[[adapters]]`` (and GOOD as good.safetensors)."""

    def write(root: Path) -> None:
        save_file(GOOD, str(root / "good.safetensors"))
        (root / "spec.json").write_text(json.dumps({"extends": str(SHAPES_SPEC), "adapters": list(adapters)}))

    return write


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for step in setups:
            step(root)

    return setup


def gen(*lora_options: str, model: Path = SHAPES_SPEC) -> list[str]:
    return ["generate", "a red circle", "--spec", str(model), *(a for o in lora_options for a in ("--lora", o)),
            "--steps", "1", "--out", "out.png", "--no-progress"]


SPEC = ["generate", "a red circle", "--spec", "spec.json", "--steps", "1", "--out", "out.png", "--no-progress"]

CASES = [
    # --lora FILE[:SCALE] itself
    Case("missing-file", gen("nope.safetensors"), ["--lora nope.safetensors", "no such file"]),
    Case("scale-not-a-number", gen("good.safetensors:strong"), ["--lora", "scale after ':'", "number"],
         setup=tensors("good.safetensors", GOOD)),
    Case("scale-nan", gen("good.safetensors:nan"), ["--lora", "finite"], setup=tensors("good.safetensors", GOOD)),
    Case("empty-option", gen(""), ["--lora", "give a LoRA file"]),
    Case("folder", gen("loras"), ["--lora", "loras is a folder"], setup=lambda root: (root / "loras").mkdir()),
    # the file, before the model loads
    Case("pickle", gen("style.pt"), ["style.pt", "pickle", ".safetensors"], setup=pickle("style.pt", GOOD)),
    Case("not-safetensors", gen("bad.safetensors"), ["bad.safetensors", "not a readable safetensors"],
         setup=raw("bad.safetensors", b"\x00garbage" * 8)),
    Case("no-tensors", gen("empty.safetensors"), ["empty.safetensors", "no tensors"],
         setup=tensors("empty.safetensors", {})),
    Case("unknown-keys", gen("odd.safetensors"), ["odd.safetensors", "not LoRA weights", "model.foo.weight", "lora_A"],
         setup=tensors("odd.safetensors", {**GOOD, "model.foo.weight": torch.zeros(2)})),
    Case("loha", gen("loha.safetensors"), ["LoHa", "lora_unet_x.hada_w1_a"],
         setup=tensors("loha.safetensors", {"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.hada_w1_b": torch.zeros(2, 2)})),
    Case("dora", gen("dora.safetensors"), ["DoRA", "dora_scale"],
         setup=tensors("dora.safetensors", {**GOOD, f"lora_unet_{TO_K.replace('.', '_')}.dora_scale": torch.ones(96)})),
    Case("half-a-layer", gen("half.safetensors"), ["half.safetensors", "lack one", "no up matrix", "lora_unet_down_blocks"],
         setup=tensors("half.safetensors", {k: v for k, v in GOOD.items() if "lora_up" not in k})),
    Case("rank-mismatch", gen("rank.safetensors"), ["do not multiply", "down [2, 64], up [96, 3]"],
         setup=tensors("rank.safetensors", lora(TO_K, (2, 64), (96, 3)))),
    Case("embedding-as-lora", gen("emb.safetensors"), ["textual inversion", 'type = "textual-inversion"'],
         setup=tensors("emb.safetensors", {"emb_params": torch.zeros(1, 64)})),
    Case("bad-alpha", gen("alpha.safetensors"), ["alpha", "one finite number"],
         setup=tensors("alpha.safetensors", {**GOOD, f"lora_unet_{TO_K.replace('.', '_')}.alpha": torch.tensor(float("nan"))})),
    # against the model
    Case("sdxl", gen("sdxl.safetensors"), ["sdxl.safetensors", "another architecture", "SDXL", "second text encoder",
                                           "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"],
         setup=tensors("sdxl.safetensors", {
             **lora("input_blocks.4.1.transformer_blocks.0.attn1.to_q", (2, 640), (640, 2)),
             "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 1280),
             "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(5120, 2)})),
    Case("sd15-shapes", gen("sd15.safetensors"), ["another architecture", "shape", "attn2_to_k makes [96, 768]",
                                                  f"{TO_K} is [96, 64]"],
         setup=tensors("sd15.safetensors", lora(TO_K, (2, 768), (96, 2)))),
    Case("unmatched-layer", gen("far.safetensors"), ["far.safetensors", "name no layer",
                                                    "unet.down_blocks.7.attentions.0.proj_in"],
         setup=tensors("far.safetensors", {**lora(TO_K, (2, 64), (96, 2), "peft"),
                                           **lora("down_blocks.7.attentions.0.proj_in", (2, 8), (8, 2), "peft")})),
    Case("no-text-encoder", gen("te.safetensors", model=MODELS / "digits" / "spec.toml"), ["text encoder layer", "no [text_encoder]"],
         setup=tensors("te.safetensors", {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 64),
                                          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(256, 2)})),
    # [[adapters]] tables
    Case("unknown-type", SPEC, ["[[adapters]] #1 type", "'loha'", "'lora'", "'textual-inversion'"],
         setup=spec({"type": "loha", "weights": "good.safetensors"})),
    Case("no-weights", SPEC, ["[[adapters]] #1 weights", "required"], setup=spec({"type": "lora"})),
    Case("bad-target", SPEC, ["[[adapters]] #1 targets", "'denoiser'"],
         setup=spec({"type": "lora", "weights": "good.safetensors", "targets": ["vae"]})),
    Case("target-absent-from-file", SPEC, ["[[adapters]] #1", "targets names 'text_encoder'", "no text encoder layers"],
         setup=spec({"type": "lora", "weights": "good.safetensors", "targets": ["text_encoder"]})),
    Case("spec-scale-text", SPEC, ["[[adapters]] #1 scale"],
         setup=spec({"type": "lora", "weights": "good.safetensors", "scale": "high"})),
    Case("missing-spec-file", SPEC, ["[[adapters]] #1", "not found", "gone.safetensors"],
         setup=spec({"type": "lora", "weights": "gone.safetensors"})),
    # textual inversion
    Case("ti-pickle", SPEC, ["[[adapters]] #1", "cat.pt", "pickle", "allow_pickle = true"],
         setup=both(pickle("cat.pt", {"string_to_param": {"*": torch.zeros(1, 64)}, "name": "cat"}),
                    spec({"type": "textual-inversion", "weights": "cat.pt"}))),
    Case("ti-sdxl", SPEC, ["sdxl-emb.safetensors", "SDXL", "clip_g"],
         setup=both(tensors("sdxl-emb.safetensors", {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}),
                    spec({"type": "textual-inversion", "weights": "sdxl-emb.safetensors"}))),
    Case("ti-keys", SPEC, ["not a textual inversion embedding", "a, b"],
         setup=both(tensors("two.safetensors", {"a": torch.zeros(1, 64), "b": torch.zeros(1, 64)}),
                    spec({"type": "textual-inversion", "weights": "two.safetensors"}))),
    Case("ti-width", SPEC, ["wide.safetensors", "[1, 768]", "[vectors, 64]", "another model"],
         setup=both(tensors("wide.safetensors", {"emb_params": torch.zeros(1, 768)}),
                    spec({"type": "textual-inversion", "weights": "wide.safetensors"}))),
    Case("ti-same-trigger", SPEC, ["[[adapters]] #2", "trigger '<cat>' is already bound"],
         setup=both(tensors("cat.safetensors", {"<cat>": torch.zeros(64)}),
                    spec({"type": "textual-inversion", "weights": "cat.safetensors"},
                         {"type": "textual-inversion", "weights": "cat.safetensors"}))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_adapter_input(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


# -- the Python API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    return sfumato.load_pipeline(SHAPES_SPEC)


@pytest.fixture
def good(tmp_path) -> Path:
    save_file({k: torch.randn(v.shape) if v.ndim else v for k, v in GOOD.items()}, str(tmp_path / "style.safetensors"))
    return tmp_path / "style.safetensors"


def test_a_lora_that_does_not_fit_changes_nothing(pipe, tmp_path):
    path = tmp_path / "half-fits.safetensors"
    save_file({**{k: torch.randn(v.shape) for k, v in lora(TO_K, (2, 64), (96, 2)).items()},
               **lora("mid_block.attentions.0.proj_in", (2, 7), (96, 2))}, str(path))
    before = {k: v.clone() for k, v in pipe.denoiser.state_dict().items()}
    with pytest.raises(sfumato.WeightsError, match="mid_block.attentions.0.proj_in makes"):
        pipe.load_adapter(path)
    assert all(torch.equal(v, before[k]) for k, v in pipe.denoiser.state_dict().items())
    assert pipe.adapters == [] and pipe.spec.adapters == []


def test_unknown_adapters_are_errors_that_list_the_applied_ones(pipe, good):
    pipe.load_adapter(good, scale=0.5)
    try:
        with pytest.raises(sfumato.SpecError, match=r"no applied adapter 'sytle'; applied adapters: 0: 'style'"):
            pipe.set_adapter_scales({"sytle": 1.0})
        with pytest.raises(sfumato.SpecError, match="no applied adapter 3"):
            pipe.remove_adapter(3)
        with pytest.raises(sfumato.SpecError, match="scale must be a finite number"):
            pipe.set_adapter_scales({"style": float("inf")})
        assert pipe.adapters[0].spec.scale == 0.5
    finally:
        pipe.remove_adapter("style")


def test_load_adapter_names_the_field_and_the_types(pipe, good):
    with pytest.raises(sfumato.SpecError, match=r"unknown adapter type 'loha'.*'lora'"):
        pipe.load_adapter(good, type="loha")
    with pytest.raises(sfumato.SpecError, match=r"\[\[adapters\]\] #1 fuse"):
        pipe.load_adapter(good, fuse="yes")


def test_a_textual_inversion_has_no_scale(pipe, tmp_path):
    save_file({"<star>": torch.zeros(64)}, str(tmp_path / "star.safetensors"))
    pipe.load_adapter(tmp_path / "star.safetensors", type="textual-inversion")
    try:
        with pytest.raises(sfumato.SpecError, match="'star'.*has no scale"):
            pipe.set_adapter_scales({"star": 0.5})
    finally:
        pipe.remove_adapter(0)
