"""The tokenizer and image-processor files of a transformers CLIP folder, so that
``CLIPProcessor.from_pretrained(folder)`` works on what ``export_hf`` writes.

- ``vocab.json`` + ``merges.txt`` (``#version: 0.2`` then one merge a line), from which
  transformers' ``CLIPTokenizer`` builds the same BPE with its own CLIP normalisation, plus
  ``tokenizer_config.json`` and ``special_tokens_map.json`` (start, end = pad = unknown token,
  ``model_max_length`` the context length);
- ``preprocessor_config.json`` of a ``CLIPImageProcessor``: shorter side to the model's size
  (bicubic), centre crop, rescale by 1/255, normalise with the CLIP mean and std: what
  ``images.pixel_values`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

from .images import CLIP_MEAN, CLIP_STD
from .tokenizer import END, START, TextTokenizer

#: PIL's code for bicubic resampling, as transformers records ``resample``.
PIL_BICUBIC = 3


def _write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_tokenizer_files(folder: Path, tokenizer: TextTokenizer) -> list[Path]:
    """``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` of
    ``tokenizer`` (the bundled OpenAI BPE or a ``train_tokenizer`` one) in ``folder``."""
    model = json.loads(tokenizer.backend.to_str())["model"]
    vocab = dict(sorted(tokenizer.backend.get_vocab().items(), key=lambda item: item[1]))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in merges), encoding="utf-8")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": END}
    return [
        _write_json(folder / "vocab.json", vocab), folder / "merges.txt",
        _write_json(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer", "do_lower_case": True,
                                                       "model_max_length": tokenizer.context_length,
                                                       "errors": "replace", **special}),
        _write_json(folder / "special_tokens_map.json", special),
    ]


def write_processor_config(folder: Path, image_size: int) -> Path:
    """``preprocessor_config.json`` of the ``CLIPImageProcessor`` for ``image_size`` pixels."""
    return _write_json(folder / "preprocessor_config.json", {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": PIL_BICUBIC,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_convert_rgb": True,
    })
