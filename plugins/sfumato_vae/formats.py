"""The two checkpoint formats a KL autoencoder arrives in, as data: key names and configs.

- **diffusers**: a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``
  (``AutoencoderKL.save_pretrained``).
- **LDM**: the original Latent Diffusion / Stable Diffusion 1.x layout, found under
  ``first_stage_model.`` in single-file checkpoints. Its decoder stages are numbered from the
  lowest resolution up (``decoder.up.{S-1}`` runs first) and its mid-block attention holds q, k,
  v and the output projection as 1x1 convolutions (``[C, C, 1, 1]`` weights).

Nothing here builds a model: ``foreign_key`` renames one sfumato key, and the loaders in
``autoencoder_kl.py`` apply it to every key of the model they build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

Format = Literal["diffusers", "ldm"]

#: The diffusers config of the Stable Diffusion 1.x VAE (shipped so checkpoints load offline).
SD1_CONFIG = Path(__file__).with_name("configs") / "sd1_vae.json"
DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
LDM_PREFIX = "first_stage_model."

# (sfumato block path, diffusers block path, LDM block path) as regexes and templates; ``{rev}``
# is the stage index counted from the other end, ``S - 1 - i``. The first rule matching wins.
_BLOCK_RULES: list[tuple[str, str, str]] = [
    (r"encoder\.down\.(?P<i>\d+)\.resnets\.(?P<j>\d+)\.",
     "encoder.down_blocks.{i}.resnets.{j}.", "encoder.down.{i}.block.{j}."),
    (r"encoder\.down\.(?P<i>\d+)\.resample\.",
     "encoder.down_blocks.{i}.downsamplers.0.", "encoder.down.{i}.downsample."),
    (r"decoder\.up\.(?P<i>\d+)\.resnets\.(?P<j>\d+)\.",
     "decoder.up_blocks.{i}.resnets.{j}.", "decoder.up.{rev}.block.{j}."),
    (r"decoder\.up\.(?P<i>\d+)\.resample\.",
     "decoder.up_blocks.{i}.upsamplers.0.", "decoder.up.{rev}.upsample."),
    (r"(?P<half>encoder|decoder)\.mid\.resnet_1\.", "{half}.mid_block.resnets.0.", "{half}.mid.block_1."),
    (r"(?P<half>encoder|decoder)\.mid\.resnet_2\.", "{half}.mid_block.resnets.1.", "{half}.mid.block_2."),
    (r"(?P<half>encoder|decoder)\.mid\.attention\.", "{half}.mid_block.attentions.0.", "{half}.mid.attn_1."),
    (r"(?P<half>encoder|decoder)\.norm_out\.", "{half}.conv_norm_out.", "{half}.norm_out."),
]

# Layer names inside a block: (sfumato, diffusers, LDM).
_LAYER_RULES: list[tuple[str, str, str]] = [
    ("shortcut.", "conv_shortcut.", "nin_shortcut."),
    ("norm.", "group_norm.", "norm."),
    ("to_q.", "to_q.", "q."),
    ("to_k.", "to_k.", "k."),
    ("to_v.", "to_v.", "v."),
    ("to_out.", "to_out.0.", "proj_out."),
]

#: sfumato keys whose LDM tensors are 1x1 convolutions rather than linear layers.
ATTENTION_PROJECTION = re.compile(r".*\.mid\.attention\.to_(q|k|v|out)\.weight$")


def foreign_key(key: str, fmt: Format, stages: int) -> str:
    """The name of sfumato parameter ``key`` in checkpoint format ``fmt`` for a model with
    ``stages`` resolution stages. Keys no rule matches (``conv_in``, ``quant_conv``, ...) are
    named the same in every format."""
    column = 1 if fmt == "diffusers" else 2
    for rule in _BLOCK_RULES:
        match = re.match(rule[0], key)
        if match:
            groups = match.groupdict()
            if "i" in groups:
                groups["rev"] = str(stages - 1 - int(groups["i"]))
            rest = key[match.end():]
            for layer in _LAYER_RULES:
                if rest.startswith(layer[0]):
                    rest = layer[column] + rest[len(layer[0]):]
                    break
            return rule[column].format(**groups) + rest
    return key


# -- configs --------------------------------------------------------------------------------

#: diffusers config entries that map one-to-one onto Spec fields of the same meaning.
_SAME_FIELDS = (
    "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
    "norm_num_groups", "scaling_factor", "use_quant_conv", "use_post_quant_conv",
)
#: Entries that do not change the computation (diffusers' tiling size, fp16 advice, metadata).
_IGNORED = {"sample_size", "force_upcast", "_class_name", "_diffusers_version", "_name_or_path"}


def spec_fields_from_diffusers(config: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """``vae-kl`` Spec fields for a diffusers ``AutoencoderKL`` config; an error names every
    entry this implementation cannot reproduce."""
    problems = []
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        problems.append(f"_class_name is {config['_class_name']!r}, expected 'AutoencoderKL'")
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn is {config['act_fn']!r}; only 'silu' is supported")
    for name, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        if any(b != block for b in config.get(name, [block])):
            problems.append(f"{name} must all be {block!r}, got {config[name]}")
    for name in ("latents_mean", "latents_std"):
        if config.get(name) is not None:
            problems.append(f"{name} (per-channel latent normalisation) is not supported")
    known = set(_SAME_FIELDS) | _IGNORED | {
        "act_fn", "down_block_types", "up_block_types", "latents_mean", "latents_std",
        "shift_factor", "mid_block_add_attention",
    }
    problems += [f"unknown entry {name!r}" for name in sorted(set(config) - known)]
    if problems:
        raise ValueError(f"{source}: cannot load this AutoencoderKL config:\n  " + "\n  ".join(problems))
    fields = {name: config[name] for name in _SAME_FIELDS if name in config}
    fields["shift_factor"] = config.get("shift_factor") or 0.0
    fields["mid_block_attention"] = config.get("mid_block_add_attention", True)
    if "block_out_channels" not in fields:  # diffusers' own default is a one-stage model
        fields["block_out_channels"] = [64]
    fields.setdefault("layers_per_block", 1)
    return fields


def diffusers_config(spec: Any, sample_size: int) -> dict[str, Any]:
    """The diffusers ``config.json`` for a ``vae-kl`` spec. ``sample_size`` is diffusers' tile
    size in image pixels; it does not change what the model computes."""
    stages = len(spec.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        **{name: getattr(spec, name) for name in _SAME_FIELDS},
        "act_fn": "silu",
        "down_block_types": ["DownEncoderBlock2D"] * stages,
        "up_block_types": ["UpDecoderBlock2D"] * stages,
        "shift_factor": spec.shift_factor or None,
        "mid_block_add_attention": spec.mid_block_attention,
        "sample_size": sample_size,
    }


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
