"""The Flickr8k loader on miniature folders in both real caption formats."""

from __future__ import annotations

import pytest
import sfumato
import torch

from sfumato_data import DatasetError, Flickr8kDataset

NAMES = [f"{1000 + i}_abc.jpg" for i in range(10)]


def captions_of(name: str) -> list[str]:
    return [f"caption {k} of {name}, with a comma" for k in range(5)]


@pytest.fixture
def kaggle(tmp_path, image_writer):
    """The Kaggle layout: Images/ and captions.txt (CSV, header image,caption)."""
    for i, name in enumerate(NAMES):
        image_writer(tmp_path / "Images" / name, (20 * i, 0, 0), size=(40, 30))
    rows = ["image,caption"] + [f'{n},"{c}"' for n in NAMES for c in captions_of(n)]
    (tmp_path / "captions.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture
def original(tmp_path, image_writer):
    """The original layout: Flicker8k_Dataset/, Flickr8k.token.txt and the official split lists."""
    for name in NAMES:
        image_writer(tmp_path / "Flicker8k_Dataset" / name, (0, 90, 0))
    lines = [f"{n}#{k}\t{c}" for n in NAMES for k, c in reversed(list(enumerate(captions_of(n))))]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split, names in {"train": NAMES[:6], "dev": NAMES[6:8], "test": NAMES[8:]}.items():
        (tmp_path / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    return tmp_path


def test_kaggle_csv_gives_five_captions_per_image_and_the_first_on_request(kaggle):
    data = Flickr8kDataset.from_spec({"root": str(kaggle), "split": "all", "resolution": 16,
                                      "caption_choice": "first"})
    assert len(data) == 10
    item = data[3]
    assert item["captions"] == captions_of(NAMES[3]) and item["caption"] == captions_of(NAMES[3])[0]
    assert item["image"].shape == (3, 16, 16)
    assert item["image"][0, 0, 0].item() == pytest.approx(60 / 127.5 - 1, abs=1e-6)


def test_random_caption_changes_between_accesses_and_follows_the_torch_seed(kaggle):
    data = Flickr8kDataset.from_spec({"root": str(kaggle), "split": "all", "resolution": 8})
    torch.manual_seed(1)
    drawn = [data[0]["caption"] for _ in range(20)]
    assert set(drawn) <= set(captions_of(NAMES[0])) and len(set(drawn)) >= 3
    torch.manual_seed(1)
    assert [data[0]["caption"] for _ in range(20)] == drawn


def test_fraction_splits_partition_the_images_deterministically(kaggle):
    def names(split, seed=0):
        spec = {"root": str(kaggle), "split": split, "resolution": 8, "val_fraction": 0.2,
                "test_fraction": 0.2, "seed": seed}
        return Flickr8kDataset.from_spec(spec).names

    train, val, test = names("train"), names("val"), names("test")
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    assert sorted(train + val + test) == NAMES
    assert names("test") == test and names("test", seed=5) != test


def test_token_file_orders_captions_by_number_and_official_split_files_are_used(original):
    train = Flickr8kDataset.from_spec({"root": str(original), "resolution": 8, "caption_choice": "first"})
    val = Flickr8kDataset.from_spec({"root": str(original), "resolution": 8, "split": "val"})
    assert train.names == NAMES[:6] and val.names == NAMES[6:8]
    assert train[0]["captions"] == captions_of(NAMES[0])
    fractions = Flickr8kDataset.from_spec({"root": str(original), "resolution": 8, "split_source": "fractions"})
    assert len(fractions) == 8


def test_images_missing_from_the_folder_are_named_or_skipped(kaggle):
    (kaggle / "Images" / NAMES[2]).unlink()
    with pytest.raises(DatasetError, match=rf"captions.txt: 1 image\(s\) .*{NAMES[2]}.*on_missing"):
        Flickr8kDataset.from_spec({"root": str(kaggle)})
    data = Flickr8kDataset.from_spec({"root": str(kaggle), "split": "all", "on_missing": "skip"})
    assert len(data) == 9 and NAMES[2] not in data.names


def test_empty_caption_file_corrupt_image_and_bad_root_are_clear_errors(kaggle, tmp_path):
    (kaggle / "Images" / NAMES[0]).write_bytes(b"\xff\xd8 truncated jpeg")
    data = Flickr8kDataset.from_spec({"root": str(kaggle), "split": "all", "resolution": 8})
    with pytest.raises(DatasetError, match=rf"{NAMES[0]}: cannot decode the image"):
        data[0]
    (kaggle / "captions.txt").write_text("")
    with pytest.raises(DatasetError, match="captions.txt: the caption file holds no captions"):
        Flickr8kDataset.from_spec({"root": str(kaggle)})
    with pytest.raises(sfumato.SpecError, match="root = .*does not exist"):
        Flickr8kDataset.from_spec({"root": str(tmp_path / "missing")})


def test_an_unquoted_comma_does_not_cut_a_caption(tmp_path, image_writer):
    """The Kaggle file quotes captions with commas; a hand-edited one may not. The image name never
    holds a comma, so the rest of the row is the caption, commas and all."""
    image_writer(tmp_path / "Images" / "a.jpg", (10, 20, 30))
    (tmp_path / "captions.txt").write_text('image,caption\na.jpg,A dog, wet, runs .\na.jpg,"A dog, quoted ."\n'
                                           'a.jpg,A "so-called" dog .\n')
    data = Flickr8kDataset.from_spec({"root": str(tmp_path), "split": "all", "resolution": 8})
    assert data[0]["captions"] == ["A dog, wet, runs .", "A dog, quoted .", 'A "so-called" dog .']


def test_a_kaggle_file_without_its_header_is_named(tmp_path, image_writer):
    image_writer(tmp_path / "Images" / "a.jpg", (10, 20, 30))
    (tmp_path / "captions.txt").write_text("image,text\na.jpg,a dog\n")
    with pytest.raises(DatasetError, match="captions.txt.*image,caption"):
        Flickr8kDataset.from_spec({"root": str(tmp_path), "split": "all"})
