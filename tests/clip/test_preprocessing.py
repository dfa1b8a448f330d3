"""Exact preprocessing: image files become the pixels transformers' ``CLIPImageProcessor`` makes,
bit for bit, and captions are cleaned as OpenAI's and open_clip's tokenizers clean them."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch
from PIL import Image
from sfumato_clip.images import load_image, pixel_values, resize_and_crop
from sfumato_clip.tokenizer import TextTokenizer, clip_vocabulary

#: Odd sizes: landscape and portrait photos, one pixel off square, tiny and very wide images.
SIZES = [(375, 500), (500, 375), (257, 301), (225, 224), (224, 224), (99, 1000), (31, 45)]


@pytest.fixture(scope="module")
def processor():
    from transformers import CLIPImageProcessor

    return lambda size: CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("size", [224, 32])
def test_pixel_values_equal_clip_image_processor_bit_for_bit(height, width, size, processor, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    theirs = processor(size)(Image.open(path), return_tensors="pt")["pixel_values"][0]
    assert torch.equal(pixel_values(path, size), theirs)


def test_the_longer_side_is_truncated_not_rounded():
    """375 x 500 to 224: the long side is int(298.67) = 298 (rounding gave 299 and another crop)."""
    image = Image.fromarray(np.zeros((375, 500, 3), dtype=np.uint8))
    resized = []
    original = Image.Image.resize
    Image.Image.resize = lambda self, size, *a, **k: resized.append(size) or original(self, size, *a, **k)
    try:
        assert resize_and_crop(image, 224).shape == (224, 224, 3)
    finally:
        Image.Image.resize = original
    assert resized == [(298, 224)]


def test_load_image_and_pixel_values_read_the_same_pixels(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path)
    unit = (load_image(path, 224) + 1) / 2  # [-1, 1] -> [0, 1]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    assert torch.allclose((unit - mean) / std, pixel_values(path, 224), atol=1e-5)


#: Text as scraped captions hold it: HTML entities (once and twice escaped), mojibake, odd spacing.
DIRTY = ["Tom &amp; Jerry", "fish &#x26; chips", "&amp;amp; twice escaped", "&lt;b&gt;bold&lt;/b&gt;",
         "cafÃ© au lait", "  spaced \t out  \n", "naïve &quot;quoted&quot; text", "a photo of a dog"]


def openai_basic_clean(text: str) -> str:
    """OpenAI CLIP's ``basic_clean`` (``simple_tokenizer.py``), the reference."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def test_captions_are_cleaned_as_openai_cleans_them(tmp_path):
    pytest.importorskip("ftfy")
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    reference = CLIPTokenizer(vocab=vocab, merges=merges)
    ours = TextTokenizer.bundled()(DIRTY).input_ids
    theirs = reference([openai_basic_clean(t) for t in DIRTY], padding="max_length", max_length=77,
                       return_tensors="pt").input_ids
    assert torch.equal(ours, theirs)
    raw = reference(DIRTY, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert not torch.equal(ours, raw)  # transformers alone keeps "&amp;" and the mojibake
    assert torch.equal(ours[0], TextTokenizer.bundled()(["Tom & Jerry"]).input_ids[0])
