"""Data problems reach the user unchanged, with the spec table they came from: a bad dataset path,
a corrupt image and an empty caption file each name the file, from Python and from the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import tomli_w

import sfumato
from sfumato.cli import main
from sfumato_data import DatasetError
from sfumato_training_helpers import UNET, run, train_spec

DIFFUSION = {"denoiser": UNET, "diffusion": {"timesteps": 100}}


def spec_for(root, **train):
    return train_spec({"type": "train-diffusion"}, root, steps=2, train=train, **DIFFUSION)


def test_missing_dataset_folder_names_the_path_and_table(tmp_path, capsys):
    spec = spec_for(tmp_path / "no-such-folder")
    with pytest.raises(sfumato.SpecError, match=r"^\[dataset\] root = .*no-such-folder.*does not exist"):
        run(spec, tmp_path / "out")
    path = tmp_path / "spec.toml"
    path.write_text(tomli_w.dumps(spec))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no-such-folder': the directory does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_keeps_its_error_type_and_names_file_and_table(class_folder, tmp_path, workers):
    root = shutil.copytree(class_folder, tmp_path / "data")
    (root / "red" / "2.png").write_bytes(b"\x89PNG\r\n not really")
    with pytest.raises(DatasetError) as caught:
        run(spec_for(root, num_workers=workers), tmp_path / "out")
    message = str(caught.value)
    assert "[dataset] type 'imagefolder': " in message
    assert f"{root / 'red' / '2.png'}: cannot decode the image" in message


def test_empty_caption_file_names_the_file_and_table(tmp_path, capsys):
    (tmp_path / "Images").mkdir()
    (tmp_path / "captions.txt").write_text("")
    spec = spec_for(tmp_path)
    spec["dataset"] = {"type": "flickr8k", "root": str(tmp_path), "resolution": 16}
    with pytest.raises(DatasetError, match=r"^\[dataset\] type 'flickr8k': .*captions.txt: the caption file holds no captions"):
        run(spec, tmp_path / "out")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "captions.txt: the caption file holds no captions" in capsys.readouterr().err


def test_a_dataset_without_the_field_a_recipe_needs_says_so(class_folder, tmp_path):
    spec = train_spec({"type": "train-classifier"}, class_folder, steps=1,
                      classifier={"type": "noise-classifier", "num_classes": 2, "channels": [8], "norm_groups": 4},
                      diffusion={"timesteps": 10})
    spec["dataset"] = {"type": "shapes", "length": 8, "resolution": 16}
    with pytest.raises(sfumato.SpecError, match="needs a \\[dataset\\] whose items have 'label'"):
        run(spec, tmp_path / "out")


def test_spec_problems_are_named_before_training(class_folder, tmp_path):
    spec = spec_for(class_folder)
    with pytest.raises(sfumato.SpecError, match=r"\[train\] stepz: unknown field"):
        run({**spec, "train": {"stepz": 3}}, tmp_path)
    with pytest.raises(sfumato.SpecError, match="set steps or epochs, not both"):
        run({**spec, "train": {"steps": 3, "epochs": 1}}, tmp_path)
    with pytest.raises(sfumato.SpecError, match="is not a training task"):
        run({**spec, "task": {"type": "unconditional"}}, tmp_path)
    with pytest.raises(sfumato.SpecError, match=r"needs the table\(s\) \[diffusion\]"):
        run({k: v for k, v in spec.items() if k != "diffusion"}, tmp_path)
    with pytest.raises(sfumato.SpecError, match="fewer than one \\[train\\] batch_size of 64"):
        run({**spec, "train": {"batch_size": 64}}, tmp_path)
    with pytest.raises(sfumato.SpecError, match="precision = \"float16\" needs CUDA"):
        run({**spec, "train": {"precision": "float16"}, "runtime": {"device": "cpu"}}, tmp_path)
    with pytest.raises(sfumato.SpecError, match=r"\[denoiser\] in_channels = 2 must equal 3"):
        run({**spec, "denoiser": {**UNET, "in_channels": 2, "out_channels": 2}}, tmp_path)
