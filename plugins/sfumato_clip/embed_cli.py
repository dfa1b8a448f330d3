"""``sfumato embed``: CLIP embeddings out, for tools of one's own.

``sfumato embed images DIR`` embeds every image under a folder (as ``search index`` reads them);
``sfumato embed texts FILE`` every line of a text file (blank lines skipped). The embeddings are
unit norm unless ``--raw``, and go to

- ``OUT.npy`` (float32 ``[N, E]``, ``numpy.load``) with the names in ``OUT.names.txt``, one a line,
  row for row: the image files relative to ``DIR``, or the captions; or
- ``OUT.parquet`` (needs ``pyarrow``, the ``clip`` extra): columns ``name`` and ``embedding`` (a
  fixed-size list of float32), and the model's identity (``search.encoder_identity``) in the
  file's schema metadata under ``sfumato.embed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import sfumato
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .arguments import check_out, positive_int
from .cli import add_encoder_arguments, load_encoders, report_skipped
from .search import embed_images, encoder_identity, index_files

FORMATS = ("npy", "parquet")
PARQUET_METADATA_KEY = b"sfumato.embed"


def output_format(out: str, chosen: str | None) -> str:
    """``--format``, else the suffix of ``--out`` (``.npy`` or ``.parquet``)."""
    if chosen:
        return chosen
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise sfumato.SpecError(f"--out {out}: give a .npy or .parquet file name, or --format npy|parquet")
    return suffix


def names_file(out: str | Path) -> Path:
    """The names file written beside an ``.npy``: ``emb.npy`` -> ``emb.names.txt``."""
    out = Path(out)
    return out.with_name(out.stem + ".names.txt")


def require_pyarrow() -> Any:
    """``pyarrow``, or a ``SpecError`` naming the extra that installs it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise sfumato.SpecError("--format parquet needs pyarrow, which is not installed: "
                                "pip install 'sfumato[clip]' (or pip install pyarrow), or write --format npy") from None
    return pyarrow


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; a missing or empty file is a ``SpecError``."""
    file = Path(path)
    if not file.is_file():
        raise sfumato.SpecError(f"{path}: the text file {'is a directory' if file.is_dir() else 'does not exist'}; "
                                "give a file with one caption a line")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise sfumato.SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise sfumato.SpecError(f"{path}: no captions (every line is blank)")
    return lines


@torch.no_grad()
def embed_texts(text_encoder: Any, texts: list[str], batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """``[M, E]`` pooled (projected) embeddings of ``texts``, float32 on the CPU, not normalised."""
    chunks = [text_encoder.encode(texts[i : i + batch_size]).pooled.float().cpu()
              for i in tqdm(range(0, len(texts), batch_size), desc="embedding texts", unit="batch",
                            disable=not progress)]
    return torch.cat(chunks)


def write_embeddings(out: str | Path, fmt: str, embeddings: np.ndarray, names: list[str],
                     identity: dict[str, Any]) -> list[Path]:
    """Write ``embeddings [N, E]`` and their ``names`` as ``fmt``; the files written."""
    out = Path(out)
    if fmt == "parquet":
        pa = require_pyarrow()
        width = embeddings.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), type=pa.float32()), width)
        table = pa.table({"name": pa.array(names, type=pa.string()), "embedding": column})
        table = table.replace_schema_metadata({PARQUET_METADATA_KEY: json.dumps(identity).encode()})
        sfumato.atomic_write(out, lambda tmp: pa.parquet.write_table(table, str(tmp)))
        return [out]
    sfumato.atomic_write(out, lambda tmp: _save_npy(tmp, embeddings))
    listing = names_file(out)
    sfumato.atomic_write(listing, lambda tmp: Path(tmp).write_text("".join(f"{n}\n" for n in names), encoding="utf-8"))
    return [out, listing]


def _save_npy(path: str | Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append .npy to a temporary name
        np.save(f, array)


def run_embed(args: argparse.Namespace) -> int:
    fmt = output_format(args.out, args.format)
    check_out(args.out, args.overwrite)
    if fmt == "npy":
        check_out(str(names_file(args.out)), args.overwrite, flag="--out (its names file)")
    else:
        require_pyarrow()
    if args.kind == "images":
        paths = index_files(args.source)
    else:
        texts = read_lines(args.source)
    text_encoder, image_encoder = load_encoders(args)
    progress = not args.no_progress
    if args.kind == "images":
        embeddings, kept, skipped = embed_images(image_encoder, paths, args.batch_size, progress, strict=args.strict,
                                                 normalize=not args.raw)
        if not kept:
            raise sfumato.SpecError(f"{args.source}: none of its {len(paths)} image file(s) could be read; "
                                    f"the first: {skipped[0]}")
        if skipped:
            report_skipped(skipped)
        names = [str(p.relative_to(args.source)) for p in kept]
    else:
        embeddings, names = embed_texts(text_encoder, texts, args.batch_size, progress), texts
        if not args.raw:
            embeddings = F.normalize(embeddings, dim=-1)
    written = write_embeddings(args.out, fmt, embeddings.numpy().astype(np.float32), names,
                               encoder_identity(text_encoder, image_encoder))
    print(f"embedded {len(names)} {args.kind} ({embeddings.shape[1]} wide) into {', '.join(map(str, written))}",
          file=sys.stderr)
    return 0


def register(cli: Any) -> None:
    """Add ``embed {images, texts}`` to the ``sfumato`` parser."""
    embed = cli.add_parser("embed", help="write CLIP embeddings of images or captions to .npy or Parquet")
    kinds = embed.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, source, about in (("images", "DIR", "every image under a folder"),
                                ("texts", "FILE", "every non-blank line of a text file")):
        parser = kinds.add_parser(kind, help=f"embed {about}")
        parser.add_argument("source", metavar=source)
        parser.add_argument("--out", required=True, metavar="OUT.npy|OUT.parquet",
                            help=".npy (with OUT.names.txt beside it) or .parquet (needs pyarrow)")
        parser.add_argument("--format", choices=FORMATS, help="default: from the --out suffix")
        parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
        parser.add_argument("--batch-size", type=positive_int, default=32)
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        if kind == "images":
            parser.add_argument("--strict", action="store_true",
                                help="fail on an unreadable image (default: skip it and list it on stderr)")
        parser.add_argument("--raw", action="store_true", help="write the embeddings without normalising them")
        add_encoder_arguments(parser)
        parser.set_defaults(handler=run_embed)
