"""``sfumato export-clip``: any CLIP sfumato reads (a training run folder, a spec, a CLIP file or
a transformers folder) as one sfumato CLIP file or a transformers folder.

A ``train-clip`` run keeps its towers in two files and its temperature in a third; a
``train-clip-finetune`` run points at the original towers and its ``heads.safetensors``. This
command combines them: ``--format sfumato`` writes one ``.safetensors`` (towers, learned logit
scale, fine-tuning heads) that ``--weights`` and ``load_clip`` read; ``--format transformers``
writes a folder ``CLIPModel`` and ``CLIPProcessor`` load (``export_hf``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sfumato

from .arguments import check_out
from .checkpoint import clip_from_encoders, export_hf, heads_state, save_clip
from .cli import add_encoder_arguments, load_encoders


def check_out_folder(path: str, overwrite: bool) -> Path:
    """``--out`` of a transformers folder: a new or empty folder, or any folder with ``--overwrite``."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise sfumato.SpecError(f"--out {path}: is a file; --format transformers writes a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise sfumato.SpecError(f"--out {path}: the folder is not empty; pass --overwrite to replace it")
    return out


def run_export(args: argparse.Namespace) -> int:
    out = check_out(args.out, args.overwrite) if args.format == "sfumato" else check_out_folder(args.out, args.overwrite)
    text_encoder, image_encoder = load_encoders(args)
    model, heads = clip_from_encoders(text_encoder, image_encoder), heads_state(text_encoder, image_encoder)
    if args.format == "sfumato":
        save_clip(model, out, heads)
    else:
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            export_hf(model, Path(tmp) / "clip", text_encoder.tokenizer, heads)
            if out.exists():
                shutil.rmtree(out)
            shutil.move(str(Path(tmp) / "clip"), out)
    with_heads = " with its fine-tuning heads" if heads else ""
    print(f"wrote {out}: CLIP {model.config.embed_dim}-wide{with_heads}, logit scale "
          f"{float(model.logit_scale.detach().exp()):.2f}")
    return 0


def register(cli: Any) -> None:
    parser = cli.add_parser("export-clip", help="write a CLIP (run folder, spec, file) as one file or a transformers folder",
                            description="Combine a CLIP's towers, learned logit scale and fine-tuning heads (a "
                            "train-clip or train-clip-finetune run folder, a spec, a CLIP file or folder) into one "
                            "sfumato .safetensors file or a transformers CLIP folder.")
    parser.add_argument("--out", required=True, help="the .safetensors file (sfumato) or folder (transformers) to write")
    parser.add_argument("--format", choices=("sfumato", "transformers"), default="sfumato",
                        help="sfumato: one .safetensors file (default); transformers: a CLIPModel/CLIPProcessor folder")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_encoder_arguments(parser)
    parser.set_defaults(handler=run_export, device="cpu")
