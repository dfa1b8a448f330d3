"""``sfumato tokenizer``: train the small caption tokenizer a tiny CLIP text tower uses."""

from __future__ import annotations

import argparse
import json

from tqdm.auto import tqdm

import sfumato

from .tokenizer import train_tokenizer


def register(cli) -> None:
    parser = cli.add_parser("tokenizer", help="train a small BPE tokenizer on a dataset's captions")
    parser.add_argument("dataset", help='a dataset spec as JSON, e.g. \'{"type": "shapes", "length": 20000}\'')
    parser.add_argument("--vocab-size", type=int, default=640, help="tokens, the 256 byte symbols and 2 specials included")
    parser.add_argument("--context-length", type=int, default=77, help="tokens per caption, start and end included")
    parser.add_argument("--every", type=int, default=1, help="read every N-th example (captions repeat)")
    parser.add_argument("--out", required=True, help="where to write tokenizer.json (put it beside the weights)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(args.dataset)
    except json.JSONDecodeError as exc:
        raise sfumato.SpecError(f"the dataset argument is not JSON ({exc.msg}): {args.dataset!r}") from None
    dataset = sfumato.build("dataset", spec)
    captions: set[str] = set()
    for index in tqdm(range(0, len(dataset), args.every), desc="reading captions"):
        example = dataset[index]
        captions.update(example.get("captions") or [example["caption"]])
    if not captions:
        raise sfumato.SpecError(f"dataset {spec.get('type')!r} yields no captions")
    tokenizer = train_tokenizer(sorted(captions), args.vocab_size, args.out, context_length=args.context_length)
    longest = int(tokenizer(sorted(captions)).mask.sum(dim=1).max())
    print(f"wrote {args.out}: {tokenizer.backend.get_vocab_size()} tokens from {len(captions)} distinct captions; "
          f"the longest caption is {longest} tokens with start and end (context length {args.context_length})")
    return 0
