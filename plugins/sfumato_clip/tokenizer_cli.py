"""``sfumato tokenizer``: train the small caption tokenizer a tiny CLIP text tower uses."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm.auto import tqdm

import sfumato

from .arguments import check_out, positive_int
from .tokenizer import train_tokenizer

#: The smallest vocabulary: the 256 byte symbols and the start and end tokens.
MIN_VOCAB_SIZE = 258
#: The shortest context: the start token, one caption token and the end token.
MIN_CONTEXT_LENGTH = 3


def register(cli) -> None:
    parser = cli.add_parser("tokenizer", help="train a small BPE tokenizer on a dataset's captions")
    parser.add_argument("dataset", help='a dataset spec as JSON, e.g. \'{"type": "shapes", "length": 20000}\'')
    parser.add_argument("--vocab-size", type=int, default=640,
                        help=f"tokens, the 256 byte symbols and 2 specials included (at least {MIN_VOCAB_SIZE})")
    parser.add_argument("--context-length", type=int, default=77,
                        help=f"tokens per caption, start and end included (at least {MIN_CONTEXT_LENGTH})")
    parser.add_argument("--every", type=positive_int, default=1, help="read every N-th example (captions repeat)")
    parser.add_argument("--out", required=True, help="where to write tokenizer.json (put it beside the weights)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=run)


def dataset_argument(text: str) -> dict[str, Any]:
    """The dataset spec given as JSON on the command line: an object with a ``type``."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise sfumato.SpecError(f"the dataset argument is not JSON ({exc.msg}): {text!r}; give the dataset spec "
                                'itself, e.g. \'{"type": "shapes", "length": 20000}\'') from None
    if not isinstance(spec, dict) or "type" not in spec:
        raise sfumato.SpecError(f"the dataset argument must be a JSON object with a \"type\", e.g. "
                                f'\'{{"type": "shapes"}}\'; got {text!r}')
    return spec


def check_sizes(vocab_size: int, context_length: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise sfumato.SpecError(f"--vocab-size {vocab_size}: must be at least {MIN_VOCAB_SIZE}, the 256 byte symbols "
                                "and the start and end tokens (640 suits the shapes captions)")
    if context_length < MIN_CONTEXT_LENGTH:
        raise sfumato.SpecError(f"--context-length {context_length}: must be at least {MIN_CONTEXT_LENGTH}, the start "
                                "and end tokens and one caption token (77 is CLIP's)")


def run(args: argparse.Namespace) -> int:
    spec = dataset_argument(args.dataset)
    check_sizes(args.vocab_size, args.context_length)
    check_out(args.out, args.overwrite)
    dataset = sfumato.build("dataset", spec)
    captions: set[str] = set()
    for index in tqdm(range(0, len(dataset), args.every), desc="reading captions"):
        example = dataset[index]
        captions.update(example.get("captions") or [example["caption"]])
    if not captions:
        raise sfumato.SpecError(f"dataset {spec.get('type')!r} yields no captions")
    tokenizer = train_tokenizer(sorted(captions), args.vocab_size, context_length=args.context_length)
    sfumato.atomic_write(args.out, tokenizer.save)
    lengths = [len(ids) + 2 for ids in tokenizer.token_ids(sorted(captions))]  # before truncation
    longest = max(lengths)
    print(f"wrote {args.out}: {tokenizer.backend.get_vocab_size()} tokens from {len(captions)} distinct captions; "
          f"the longest caption is {longest} tokens with start and end (context length {args.context_length})")
    if longest > args.context_length:
        cut = sum(length > args.context_length for length in lengths)
        print(f"warning: {cut} caption(s) are longer than --context-length {args.context_length} and will be "
              f"truncated; {longest} fits them all", file=sys.stderr)
    return 0
