"""CLIP tokenization: the shipped OpenAI BPE vocabulary, or a small BPE trained on captions.

The bundled vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (see NOTICE). Its
``vocab.json`` / ``merges.txt`` equivalents are derived in memory exactly as OpenAI's
``SimpleTokenizer`` does, and the BPE itself runs in transformers' ``CLIPTokenizer`` (backed by
the ``tokenizers`` library), so ids equal those of any Hugging Face CLIP tokenizer.

Every caption becomes ``[start, tokens..., end, pad...]`` of exactly ``context_length`` ids,
padded with the end-of-text token as Hugging Face and Stable Diffusion do.

Text is cleaned first as OpenAI's and open_clip's ``basic_clean`` cleans it: ``ftfy.fix_text``
(mojibake such as ``"cafÃ©"`` -> ``"café"``; when ftfy is installed, ``pip install sfumato[clip]``)
and HTML entities unescaped twice (``"&amp;amp;"`` -> ``"&"``), which transformers'
``CLIPTokenizer`` does not do; whitespace runs and case are normalised by the BPE itself.
"""

from __future__ import annotations

import gzip
import html
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
BUILTIN = "builtin:clip"
START, END = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters, in the
    order that fixes the first 256 ids of the CLIP vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


@lru_cache(maxsize=1)
def _fix_text():
    """ftfy's ``fix_text``, or None without ftfy (the clip extra): imported on the first text
    cleaned, not with the plugin (0.05-0.1 s that commands which never tokenize need not pay)."""
    try:
        from ftfy import fix_text
    except ImportError:  # without it only HTML entities are cleaned
        return None
    return fix_text


def clean_text(text: str) -> str:
    """OpenAI CLIP's ``basic_clean``: ftfy's fixes (when ftfy is installed), HTML entities
    unescaped twice, surrounding whitespace stripped."""
    fix_text = _fix_text()
    if fix_text is not None:
        text = fix_text(text)
    return html.unescape(html.unescape(text)).strip()


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` of the bundled BPE, built as OpenAI's ``SimpleTokenizer`` builds them:
    256 byte symbols, the same with ``</w>``, one symbol per merge (48,894 merges), then the
    start and end tokens: 49,408 ids."""
    lines = gzip.open(VOCAB_PATH).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START, END]
    return {token: i for i, token in enumerate(vocab)}, merges


@lru_cache(maxsize=1)
def _clip_backend() -> Tokenizer:
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges).backend_tokenizer


@dataclass
class TokenBatch:
    """:param input_ids: ``[B, L]`` int64. :param mask: ``[B, L]`` True from the start token up to
    and including the end token."""

    input_ids: Tensor
    mask: Tensor


class TextTokenizer:
    """Turns captions into fixed-length id tensors for the CLIP text transformer.

    :param backend: a ``tokenizers.Tokenizer`` that knows the start and end tokens.
    :param context_length: ids per caption; longer captions are truncated with a warning.
    :param pad_token: the token that fills a caption's row after its end token (None: the end
        token, as OpenAI's CLIP and SD 1.x do; SDXL's second tokenizer pads with ``"!"``).
    """

    def __init__(self, backend: Tokenizer, context_length: int = 77, pad_token: str | None = None):
        self.backend = backend
        backend.no_truncation()  # a Hugging Face tokenizer.json may carry its own settings;
        backend.no_padding()  # truncation and padding happen in __call__
        self.context_length = context_length
        ids = [backend.token_to_id(t) for t in (START, END)]
        if None in ids:
            raise ValueError(f"a CLIP tokenizer needs the special tokens {START} and {END}")
        self.start_id, self.end_id = ids
        self.pad_id = self.end_id if pad_token is None else backend.token_to_id(pad_token)
        if self.pad_id is None:
            raise ValueError(f"the pad token {pad_token!r} is not in the tokenizer's vocabulary")

    @classmethod
    def bundled(cls, context_length: int = 77) -> TextTokenizer:
        """OpenAI's CLIP BPE (49,408 ids), shipped with the plugin."""
        return cls(_clip_backend(), context_length)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = 77) -> TextTokenizer:
        """A ``tokenizer.json`` (or a folder holding one), as ``train_tokenizer`` saves it, or a
        transformers tokenizer folder with ``vocab.json`` and ``merges.txt`` (Stable Diffusion's)."""
        path = Path(path)
        if path.is_dir() and not (path / "tokenizer.json").is_file() and (path / "vocab.json").is_file():
            from transformers import CLIPTokenizer

            backend = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).backend_tokenizer
            return cls(backend, context_length, folder_pad_token(path))
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(Tokenizer.from_file(str(path)), context_length, folder_pad_token(path.parent))

    @classmethod
    def load(cls, name: str, context_length: int = 77) -> TextTokenizer:
        """``builtin:clip`` or a path to a ``tokenizer.json``."""
        return cls.bundled(context_length) if name == BUILTIN else cls.from_file(name, context_length)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    def __call__(self, texts: list[str]) -> TokenBatch:
        """Tokenize, add start/end tokens, truncate to ``context_length`` (keeping the end token)
        and pad with the end token. Truncation is reported in one warning per call, however many
        captions it cut (a class ensemble is hundreds of prompts)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        length = self.context_length
        rows = self.token_ids(texts)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        cut = [i for i, ids in enumerate(rows) if len(ids) + 2 > length]
        if cut:
            longest = max(cut, key=lambda i: len(rows[i]))
            warnings.warn(
                f"{len(cut)} of {len(rows)} caption(s) are longer than the {length} tokens the model reads and were "
                f"truncated (the end token kept); the longest, {len(rows[longest]) + 2} tokens: "
                f"{texts[longest][:60]!r}...", stacklevel=2,
            )
        for i, ids in enumerate(rows):
            row = [self.start_id, *ids[: length - 2], self.end_id]
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        return TokenBatch(input_ids, mask)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """The BPE ids of each text, without start and end tokens and not truncated."""
        cleaned = [clean_text(text) for text in texts]
        return [enc.ids for enc in self.backend.encode_batch(cleaned, add_special_tokens=False)]

    def decode(self, input_ids: list[int]) -> str:
        ids = [i for i in input_ids if i not in (self.start_id, self.end_id)]
        return self.backend.decode(ids).replace("</w>", " ").strip()


def folder_pad_token(folder: Path) -> str | None:
    """The pad token a transformers tokenizer folder names (``special_tokens_map.json`` or
    ``tokenizer_config.json``), when it is not the end token; None otherwise."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            pad = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad
            if isinstance(pad, str):
                return None if pad == END else pad
    return None


def train_tokenizer(captions: list[str], vocab_size: int, path: str | Path | None = None,
                    context_length: int = 77) -> TextTokenizer:
    """Train a small byte-level BPE on ``captions`` with CLIP's normalisation and
    pre-tokenisation (lower-case, ``</w>`` word ends), for tiny models whose captions use few
    words. ``vocab_size`` counts the 256 byte symbols and the two special tokens. Saved as
    ``tokenizer.json`` at ``path`` when given: put it beside the weights and the encoder finds it.
    """
    clip = _clip_backend()
    backend = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    backend.normalizer = clip.normalizer
    backend.pre_tokenizer = clip.pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[START, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator([clean_text(caption) for caption in captions], trainer)
    tokenizer = TextTokenizer(backend, context_length)
    if path is not None:
        tokenizer.save(path)
    return tokenizer
