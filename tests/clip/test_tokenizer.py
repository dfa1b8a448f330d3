"""The CLIP tokenizer: the shipped OpenAI vocabulary gives the ids every CLIP model expects."""

from __future__ import annotations

import json
import random

import pytest
import torch
from sfumato_clip import TextTokenizer, train_tokenizer
from sfumato_clip.tokenizer import clip_vocabulary

HANDPICKED = [
    "a photo of a cat", "A PHOTO OF A DOG.", "", " ", "hello,world!!", "it's a dog's life; isn't it?",
    "3.14159 and 2,718 and 1e-10", "café naïve résumé", "Straße", "日本語のテキスト", "emoji 🐱🐶🚀",
    "tabs\tand\nnewlines", "multiple     spaces", "<|startoftext|> inside", "ends with <|endoftext|>",
    "don't won't shouldn't y'all", "C++ & C# > Java?", "e-mail: someone@example.com", "#hashtag @mention",
    "x" * 300, "a red circle above a blue square", "Ünïcödé ÀÉÎÕÜ", "Привет мир", "مرحبا بالعالم",
    "(parentheses) [brackets] {braces}", "quotes \"double\" 'single'", "100% sure", "$5.99 / €4,50",
    "ALLCAPS lowercase MiXeD", "https://example.com/path?query=1&x=2", "...ellipsis...", "a-b_c.d",
]
WORDS = ["the", "photo", "painting", "of", "dog", "cat", "astronaut", "riding", "horse", "Mars", "blue",
         "square", "42", "1999", "café", "東京", "über", "—", "!!", "?", "'s", "x-ray", "naïve", "🙂"]


def varied_strings(n: int = 200) -> list[str]:
    rng = random.Random(0)
    strings = list(HANDPICKED)
    while len(strings) < n:
        words = rng.choices(WORDS, k=rng.randint(1, 60))
        seps = rng.choices([" ", "  ", ", ", "-", ""], k=len(words))
        strings.append("".join(w + s for w, s in zip(words, seps)))
    return strings


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """transformers' CLIPTokenizer built from vocab.json / merges.txt files of the same vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return CLIPTokenizer.from_pretrained(str(folder))


def test_vocabulary_matches_openai_layout():
    vocab, merges = clip_vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_known_openai_ids():
    ids = TextTokenizer.bundled()(["a photo of a cat"]).input_ids[0, :8].tolist()
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]


def test_ids_equal_transformers_on_200_strings(reference):
    texts = varied_strings()
    ours = TextTokenizer.bundled()
    with pytest.warns(UserWarning):  # some strings are longer than 77 tokens
        batch = ours(texts)
    ref = reference(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    mismatched = [t for t, a, b in zip(texts, batch.input_ids, ref.input_ids) if not torch.equal(a, b)]
    assert not mismatched, mismatched[:5]


def test_long_texts_are_truncated_with_one_warning_per_call(recwarn):
    tokenizer = TextTokenizer.bundled()
    batch = tokenizer(["word " * 100, "a cat", "word " * 90])  # 100 tokens + start + end = 102
    assert len(recwarn) == 1
    assert "2 of 3 caption(s)" in str(recwarn[0].message) and "102 tokens" in str(recwarn[0].message)
    assert batch.input_ids.shape == (3, 77)
    assert batch.input_ids[0, -1].item() == 49407 and batch.mask[0].all()


def test_mask_covers_start_to_end_token():
    batch = TextTokenizer.bundled()(["a cat", "a photo of a dog"])
    assert batch.mask.sum(1).tolist() == [4, 7]
    assert batch.input_ids.dtype == torch.long


def test_trained_tokenizer_round_trips_through_its_file(tmp_path):
    captions = ["a red circle above a blue square", "two green triangles", "a blue circle"] * 5
    tokenizer = train_tokenizer(captions, vocab_size=300, path=tmp_path / "tokenizer.json")
    loaded = TextTokenizer.from_file(tmp_path)
    assert loaded.vocab_size == tokenizer.vocab_size <= 300
    a, b = tokenizer(["a red circle"]), loaded(["a red circle"])
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.mask.sum().item() == 5  # start, "a", "red", "circle", end: frequent words become one token
    assert loaded.decode(a.input_ids[0].tolist()) == "a red circle"
