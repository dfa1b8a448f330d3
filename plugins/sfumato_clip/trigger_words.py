"""Trigger words: new tokens bound to learned embedding vectors at run time (textual inversion,
Gal et al., https://arxiv.org/abs/2208.01618), for ``CLIPTextEncoder.add_tokens``.

A trigger of ``n`` vectors gets ``n`` new ids after the vocabulary, and its vectors become new
rows of the token embedding table; in a prompt, the trigger becomes those ids whatever the BPE
would make of it, and the rest of the prompt is tokenized as before. This is what transformers'
added tokens do for diffusers' ``load_textual_inversion`` (which writes a multi-vector trigger
``t`` as ``t t_1 ... t_n-1``): matching ignores case (CLIP lower-cases prompts) and finds a trigger
anywhere, except that a trigger starting or ending with a letter or digit must not continue a word
on that side (``cat`` does not fire inside ``category``, where transformers' would).

Removing triggers rebuilds the table from the original one, which is put back unchanged (the same
parameter) when the last trigger goes.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Mapping, NamedTuple

import sfumato
import torch
from torch import Tensor, nn

from .tokenizer import TextTokenizer


class Encoded(NamedTuple):
    """What ``TextTokenizer`` reads of an encoding: its ids."""

    ids: list[int]


class TriggerWords:
    """A ``tokenizers.Tokenizer`` stand-in for ``TextTokenizer.backend`` that writes each trigger
    as its own ids and hands the text between triggers to the real BPE ``backend``.

    :param ids: trigger -> its ids (in order), triggers as bound (matched ignoring case).
    """

    def __init__(self, backend: Any, ids: Mapping[str, list[int]]):
        self.backend = backend
        self.ids = {trigger.lower(): list(token_ids) for trigger, token_ids in ids.items()}
        self.names = {i: trigger for trigger, token_ids in ids.items() for i in token_ids}
        longest_first = sorted(ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(_whole_word(t) for t in longest_first), re.IGNORECASE)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[Encoded]:
        return [Encoded(self._encode(text, add_special_tokens)) for text in texts]

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids: list[int] = []
        start = 0
        for match in self.pattern.finditer(text):
            ids += self._bpe(text[start:match.start()], add_special_tokens)
            ids += self.ids[match.group().lower()]
            start = match.end()
        return ids + self._bpe(text[start:], add_special_tokens)

    def _bpe(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids if text else []

    def get_vocab_size(self) -> int:
        return self.backend.get_vocab_size() + len(self.names)

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, triggers written as themselves."""
        pieces, run = [], []
        for i in ids:
            if i in self.names:
                pieces += [self.backend.decode(run), self.names[i]] if run else [self.names[i]]
                run = []
            else:
                run.append(i)
        pieces += [self.backend.decode(run)] if run else []
        return " ".join(pieces)

    def __getattr__(self, name: str) -> Any:
        if name == "backend":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.backend, name)


def _whole_word(trigger: str) -> str:
    r"""The pattern of ``trigger``, not continuing a word where it starts or ends with ``\w``."""
    before = r"(?<!\w)" if re.match(r"\w", trigger) else ""
    after = r"(?!\w)" if re.search(r"\w$", trigger) else ""
    return before + re.escape(trigger) + after


class TriggerBinding:
    """The triggers bound to one text encoder: its original tokenizer and token embedding table,
    and the vectors of each trigger (in binding order)."""

    def __init__(self, tokenizer: TextTokenizer, embedding: nn.Embedding):
        self.tokenizer, self.embedding = tokenizer, embedding
        self.table = embedding.weight  # the original parameter, put back when the last trigger goes
        self.vectors: dict[str, Tensor] = {}

    def add(self, vectors: Mapping[str, Tensor]) -> TextTokenizer:
        """Bind each trigger to its ``[n, width]`` vectors; returns the tokenizer that knows them.
        Nothing changes when a trigger is empty, already bound, or its vectors do not fit."""
        width = self.table.shape[1]
        for trigger, value in vectors.items():
            if not isinstance(trigger, str) or not trigger.strip() or trigger != trigger.strip():
                raise sfumato.SpecError(f"a trigger word must be non-empty text without spaces at its ends, got {trigger!r}")
            if trigger.lower() in (t.lower() for t in self.vectors):
                raise sfumato.SpecError(f"the trigger {trigger!r} is already bound to another embedding; give this one "
                                        "another token")
            if value.ndim != 2 or value.shape[1] != width or value.shape[0] == 0:
                raise sfumato.WeightsError(
                    f"embedding for {trigger!r} has shape {list(value.shape)}; this text encoder needs [vectors, "
                    f"{width}]: it was made for a text encoder of width {value.shape[-1]} (another model)")
        self.vectors.update({t: v.detach() for t, v in vectors.items()})
        return self.rebuild()

    def remove(self, triggers: Iterable[str]) -> TextTokenizer:
        for trigger in triggers:
            self.vectors.pop(trigger, None)
        return self.rebuild()

    def rebuild(self) -> TextTokenizer:
        """Point the embedding at the original table plus the bound vectors (or at the original
        alone) and return the matching tokenizer."""
        base = self.table
        if not self.vectors:
            self.embedding.weight, self.embedding.num_embeddings = base, base.shape[0]
            return self.tokenizer
        ids, rows, next_id = {}, [], base.shape[0]
        for trigger, value in self.vectors.items():
            ids[trigger] = list(range(next_id, next_id + value.shape[0]))
            rows.append(value.to(device=base.device, dtype=base.dtype))
            next_id += value.shape[0]
        self.embedding.weight = nn.Parameter(torch.cat([base.detach(), *rows]), requires_grad=base.requires_grad)
        self.embedding.num_embeddings = next_id
        tokenizer = copy.copy(self.tokenizer)
        tokenizer.backend = TriggerWords(self.tokenizer.backend, ids)
        return tokenizer
