"""A training run's folder is one CLIP: ``train-clip`` and ``train-clip-finetune`` outputs are
accepted by every CLIP command as ``--weights RUN`` or ``--spec RUN/trained.toml``, their learned
logit scale and heads load back, and ``export-clip`` writes them as one file or a transformers
folder."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import sfumato
import torch
from PIL import Image
from sfumato.cli import main
from sfumato_clip import CLIP, load_clip, save_clip
from sfumato_clip.config import PRESETS
from sfumato_recipes.clip_tasks import FinetuneHeads
from sfumato_clip_data_helpers import write_cifar10, write_flickr8k
from sfumato_training_helpers import run, train_spec, write_class_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny CLIP file, a class folder, a train-clip-finetune run on it (heads, 2 epochs) and a
    train-clip run (3 steps), each trained from the same seed."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    save_clip(CLIP(PRESETS["tiny"]), root / "clip.safetensors")
    classes = write_class_folder(root / "classes")
    tower = {"weights": str(root / "clip.safetensors")}
    finetune = train_spec({"type": "train-clip-finetune", "projection_dim": 8}, classes, steps=None,
                          text_encoder={"type": "clip-text", **tower}, image_encoder={"type": "clip-image", **tower},
                          train={"epochs": 2, "steps": None, "lr": 1e-2})
    run(finetune, root / "finetune")
    scratch = train_spec({"type": "train-clip"}, classes, steps=3, text_encoder={"type": "clip-text", "architecture": "tiny"},
                         image_encoder={"type": "clip-image", "architecture": "tiny"})
    run(scratch, root / "scratch")
    sfumato.set_registry(None)
    return root


def cli(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    sfumato.set_registry(None)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_finetune_run_spec_names_the_heads_the_towers_and_the_learned_scale(runs):
    spec = tomllib.loads((runs / "finetune" / "trained.toml").read_text())
    heads = FinetuneHeads.load(runs / "finetune" / "heads.safetensors")
    for table in ("text_encoder", "image_encoder"):
        assert spec[table]["weights"] == str(runs / "clip.safetensors")
        assert spec[table]["head"] == "heads.safetensors"
        assert spec[table]["logit_scale"] == pytest.approx(heads.temperature.log_scale.item(), abs=1e-6)
    assert heads.temperature.log_scale.item() != pytest.approx(math.log(1 / 0.07), abs=1e-4)  # it trained


def test_the_encoders_of_a_finetune_run_apply_its_heads(runs):
    text = sfumato.build("encoder", {"type": "clip-text", "weights": str(runs / "finetune")}).eval()
    image = sfumato.build("encoder", {"type": "clip-image", "weights": str(runs / "finetune")}).eval()
    bare = sfumato.build("encoder", {"type": "clip-image", "weights": str(runs / "clip.safetensors")}).eval()
    heads = FinetuneHeads.load(runs / "finetune" / "heads.safetensors")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(image.encode(images).pooled, heads.image_head(bare.encode(images).pooled), atol=1e-6)
        assert text.encode(["a photo of a red"]).pooled.shape == (1, 8)
    assert text.embed_dim == image.embed_dim == 8
    assert text.spec.head == str(runs / "finetune" / "heads.safetensors")


def test_a_scratch_run_records_its_temperature(runs):
    temperature = sfumato.load_weights(runs / "scratch" / "temperature.safetensors")["log_scale"]
    model = load_clip(runs / "scratch")
    assert model.logit_scale.item() == pytest.approx(temperature.item(), abs=1e-5)
    trained = sfumato.load_weights(runs / "scratch" / "text_encoder.safetensors")
    assert torch.equal(model.state_dict()["text.token_embedding.weight"], trained["text.token_embedding.weight"])


@pytest.mark.parametrize("run_name", ["finetune", "scratch"])
def test_classify_takes_the_run_folder_or_its_spec_alike(run_name, runs, capsys):
    image = runs / "classes" / "red" / "0.png"
    by_folder = cli(["classify", image, "--labels", "red,blue", "--weights", runs / run_name], capsys)
    by_spec = cli(["classify", image, "--labels", "red,blue", "--spec", runs / run_name / "trained.toml"], capsys)
    assert by_folder == by_spec and "red" in by_folder


def test_search_and_eval_take_the_run_folder(runs, tmp_path, capsys):
    index = tmp_path / "index.safetensors"
    cli(["search", "index", runs / "classes", "--out", index, "--weights", runs / "finetune"], capsys)
    hits = cli(["search", "query", index, "--image", runs / "classes" / "red" / "1.png", "-k", "1"], capsys)
    assert hits.split()[1].endswith("red/1.png")
    for command in ("zero-shot", "retrieval"):
        cli(["eval", command, "--dataset", "imagefolder", "--data", f"root={runs / 'classes'}", "--weights",
             runs / "finetune", "--out", tmp_path / f"{command}.json"], capsys)
    assert json.loads((tmp_path / "zero-shot.json").read_text())["tasks"]["label"]["images"] == 8


def test_eval_without_a_dataset_uses_the_held_out_split_of_the_run(runs, tmp_path, capsys):
    cli(["eval", "retrieval", "--weights", runs / "finetune", "--out", tmp_path / "r.json"], capsys)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"]["type"] == "imagefolder" and report["dataset"]["split"] == "val"
    assert report["dataset"]["root"] == str(runs / "classes")


def test_export_clip_combines_a_run_into_one_file(runs, tmp_path, capsys):
    """The two tower files and the temperature of a train-clip run, or the towers and heads of a
    fine-tuning run, become one file that classifies exactly as the run folder does."""
    image = runs / "classes" / "blue" / "0.png"
    for run_name in ("scratch", "finetune"):
        out = tmp_path / f"{run_name}.safetensors"
        cli(["export-clip", "--weights", runs / run_name, "--out", out], capsys)
        assert (cli(["classify", image, "--labels", "red,blue", "--weights", out], capsys).split(": ")[1]
                == cli(["classify", image, "--labels", "red,blue", "--weights", runs / run_name], capsys).split(": ")[1])


def test_export_clip_to_transformers_loads_in_transformers_and_back(runs, tmp_path, capsys):
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "hf"
    cli(["export-clip", "--weights", runs / "scratch", "--out", out, "--format", "transformers"], capsys)
    model, processor = CLIPModel.from_pretrained(out).eval(), CLIPProcessor.from_pretrained(out)
    ours = load_clip(runs / "scratch").eval()
    inputs = processor(text=["a photo of a red"], images=[Image.open(runs / "classes" / "red" / "0.png")],
                       return_tensors="pt", padding="max_length")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    with torch.no_grad():
        theirs = model.get_text_features(input_ids=inputs["input_ids"])
        theirs = theirs if isinstance(theirs, torch.Tensor) else theirs.pooler_output
        assert torch.allclose(theirs, ours.encode_text(inputs["input_ids"]), atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(ours.logit_scale.item(), abs=1e-6)
    heads_out = tmp_path / "hf-heads"
    cli(["export-clip", "--weights", runs / "finetune", "--out", heads_out, "--format", "transformers"], capsys)
    assert (heads_out / "heads.safetensors").is_file()
    back = sfumato.build("encoder", {"type": "clip-image", "weights": str(heads_out)}).eval()
    run_image = sfumato.build("encoder", {"type": "clip-image", "weights": str(runs / "finetune")}).eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(back.encode(images).pooled, run_image.encode(images).pooled, atol=1e-6)


@pytest.mark.parametrize("caption_loss", ["siglip", "soft_targets"])
def test_caption_losses_are_reachable_from_the_spec(caption_loss, runs, tmp_path):
    tower = {"weights": str(runs / "clip.safetensors")}
    spec = train_spec({"type": "train-clip-finetune", "objective": "captions", "projection_dim": 8,
                       "caption_loss": caption_loss}, runs / "classes", steps=3,
                      text_encoder={"type": "clip-text", **tower}, image_encoder={"type": "clip-image", **tower})
    result = run(spec, tmp_path / "out")
    assert all(math.isfinite(r["loss"]) for r in result.metrics)
    heads = FinetuneHeads.load(result.weights["heads"])
    assert (heads.logit_bias is not None) == (caption_loss == "siglip")
    if caption_loss == "siglip":
        assert heads.logit_bias.item() != -10.0  # the bias trains


def test_done_when_cifar10_and_flickr8k_runs_are_evaluated_from_their_folders(runs, tmp_path, capsys):
    """The issue's done-when path on files in the real formats: fine-tune on CIFAR-10 (labels) and on
    Flickr8k (captions, official split lists present), then `sfumato eval` from the run folder
    alone, on each dataset's test split, with no code of one's own."""
    tower = {"weights": str(runs / "clip.safetensors")}
    towers = {"text_encoder": {"type": "clip-text", **tower}, "image_encoder": {"type": "clip-image", **tower}}
    train = {"batch_size": 4, "epochs": 1, "progress": False, "log_every": 1, "checkpoint_every": 0}
    cifar = write_cifar10(tmp_path / "cifar")
    run({"task": {"type": "train-clip-finetune", "projection_dim": 8}, "train": train,
         "dataset": {"type": "cifar10", "root": str(cifar)}, **towers}, tmp_path / "cifar-run")
    cli(["eval", "zero-shot", "--weights", tmp_path / "cifar-run", "--out", tmp_path / "cifar.json"], capsys)
    report = json.loads((tmp_path / "cifar.json").read_text())
    assert report["dataset"]["split"] == "test" and report["tasks"]["label"]["images"] == 4
    cli(["eval", "clip-benchmark", "--weights", tmp_path / "cifar-run", "--shots", 1, "--no-progress",
         "--out", tmp_path / "cifar-benchmark.json"], capsys)
    (entry,) = json.loads((tmp_path / "cifar-benchmark.json").read_text())["datasets"]
    label = entry["classification"]["label"]
    assert entry["dataset"]["split"] == "test" and entry["train_dataset"]["split"] == "train"
    assert (label["images"], label["classes"], label["prompts"]) == (4, 10, "benchmark")
    assert {"zero-shot", "linear-probe", "few-shot"} <= set(label)

    flickr = write_flickr8k(tmp_path / "flickr")
    run({"task": {"type": "train-clip-finetune", "objective": "captions", "projection_dim": 8}, "train": train,
         "dataset": {"type": "flickr8k", "root": str(flickr), "resolution": 16}, **towers}, tmp_path / "flickr-run")
    cli(["eval", "retrieval", "--weights", tmp_path / "flickr-run", "--out", tmp_path / "flickr.json"], capsys)
    report = json.loads((tmp_path / "flickr.json").read_text())
    assert report["dataset"]["split"] == "test" and (report["images"], report["captions"]) == (2, 10)
