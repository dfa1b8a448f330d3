"""The diffusers component-folder format of DiT and PixArt: ``config.json`` +
``diffusion_pytorch_model.safetensors`` (or shards listed in ``...safetensors.index.json``).

``DiTTransformer2DModel`` maps to ``norm_type = "ada_norm_zero"``, ``PixArtTransformer2DModel`` to
``"ada_norm_single"``; folders saved as the older ``Transformer2DModel`` (facebook/DiT-XL-2-256,
the PixArt-alpha repositories) are read by their ``norm_type``. Parameter names are the same on
both sides, so only the configuration is translated, and a weights path must agree with the spec:
``read_dit_weights`` names every architecture field that differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError
from torch import Tensor

import sfumato

from .spec import DiTSpec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SHARD_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
#: The diffusers version whose config layout ``diffusers_config_from_spec`` writes.
DIFFUSERS_FORMAT_VERSION = "0.30.0"
CLASS_NAMES = {"ada_norm_zero": "DiTTransformer2DModel", "ada_norm_single": "PixArtTransformer2DModel"}
#: Each class's constructor defaults, for options a config leaves out.
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "DiTTransformer2DModel": dict(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=None, num_layers=28,
        sample_size=32, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_eps=1e-5,
        attention_bias=True, dropout=0.0,
    ),
    "PixArtTransformer2DModel": dict(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
        sample_size=128, patch_size=2, norm_type="ada_norm_single", norm_eps=1e-6, attention_bias=True,
        dropout=0.0, cross_attention_dim=1152, caption_channels=None, interpolation_scale=None,
        use_additional_conditions=None,
    ),
}
#: diffusers options sfumato does not implement, with the only value it accepts.
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "activation_fn": "gelu-approximate", "upcast_attention": False, "norm_elementwise_affine": False,
    "attention_type": "default", "only_cross_attention": False, "double_self_attention": False,
    "num_vector_embeds": None,
}
#: Spec fields that do not change what the weights compute, so a weights file never disagrees on them.
NOT_ARCHITECTURE = {"weights", "dropout", "gradient_checkpointing", "autoencoder_downscale"}


def spec_from_diffusers_config(config: Mapping[str, Any]) -> DiTSpec:
    """Translate a diffusers ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` (or patched
    ``Transformer2DModel``) config into a ``DiTSpec``. Options sfumato does not implement must have
    their default value; anything else is a ``SpecError`` naming the option. Without
    ``_class_name``, the ``norm_type`` decides, or else a config with cross-attention is PixArt's."""
    text = "cross_attention_dim" in config or "caption_channels" in config
    norm_type = config.get("norm_type", "ada_norm_single" if text else "ada_norm_zero")
    class_name = config.get("_class_name") or CLASS_NAMES.get(norm_type, "Transformer2DModel")
    if class_name == "Transformer2DModel" and config.get("patch_size") is not None:
        class_name = CLASS_NAMES.get(config.get("norm_type"), class_name)
    if class_name not in CLASS_DEFAULTS:
        raise sfumato.SpecError(f"config is a {class_name} (norm_type {config.get('norm_type')!r}); the dit plugin reads "
                                f"{' and '.join(CLASS_DEFAULTS)} folders (or a Transformer2DModel with patch_size and "
                                "norm_type ada_norm_zero or ada_norm_single)")
    c = {**CLASS_DEFAULTS[class_name], **config}
    for option, accepted in UNSUPPORTED_OPTIONS.items():
        if c.get(option, accepted) != accepted:
            raise sfumato.SpecError(f"diffusers option {option}={c[option]!r} is not supported (only {accepted!r})")
    if c["norm_type"] != CLASS_DEFAULTS[class_name]["norm_type"]:
        raise sfumato.SpecError(f"{class_name} with norm_type {c['norm_type']!r} is not supported "
                                f"(only {CLASS_DEFAULTS[class_name]['norm_type']!r})")
    in_channels = c["in_channels"]
    out_channels = c["out_channels"] or in_channels
    learned_sigma = out_channels == 2 * in_channels
    fields: dict[str, Any] = dict(
        sample_size=c["sample_size"], in_channels=in_channels,
        out_channels=None if learned_sigma or out_channels == in_channels else out_channels,
        learned_sigma=learned_sigma, patch_size=c["patch_size"], num_layers=c["num_layers"],
        num_attention_heads=c["num_attention_heads"], attention_head_dim=c["attention_head_dim"],
        norm_type=c["norm_type"], attention_bias=c["attention_bias"], norm_eps=c["norm_eps"], dropout=c["dropout"],
    )
    if c["norm_type"] == "ada_norm_zero":
        fields.update(num_classes=c["num_embeds_ada_norm"])
    else:
        if c["caption_channels"] is not None and c["cross_attention_dim"] is None:
            raise sfumato.SpecError("a PixArt config with caption_channels but no cross_attention_dim projects captions "
                                    "it never reads; sfumato does not support it")
        interpolation = c["interpolation_scale"]
        micro = c["use_additional_conditions"]
        fields.update(
            cross_attention_dim=c["cross_attention_dim"], caption_channels=c["caption_channels"],
            interpolation_scale=interpolation if interpolation is not None else max(c["sample_size"] // 64, 1),
            micro_conditions=micro if micro is not None else c["sample_size"] == 128,
        )
    try:
        return DiTSpec(**fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()]
        raise sfumato.SpecError([f"{class_name} config gives an invalid DiT: {p}" for p in problems]) from None


def diffusers_config_from_spec(spec: DiTSpec) -> dict[str, Any]:
    """The diffusers ``config.json`` of a ``DiTSpec`` (the inverse of ``spec_from_diffusers_config``).
    Options diffusers does not have (learned positions, an unconditional adaLN-Zero model) are
    errors naming them."""
    problems = []
    if spec.positions != "sincos":
        problems.append("positions = 'learned' (diffusers computes sin-cos positions)")
    if spec.norm_type == "ada_norm_zero" and spec.num_classes is None:
        problems.append("norm_type = 'ada_norm_zero' without num_classes (diffusers' DiT is class-conditional)")
    if spec.norm_type == "ada_norm_zero" and spec.interpolation_scale != 1:
        problems.append(f"interpolation_scale = {spec.interpolation_scale} (diffusers' DiT uses 1)")
    if not spec.learned_sigma and spec.prediction_channels == 2 * spec.in_channels:
        problems.append("out_channels = 2 * in_channels without learned_sigma (diffusers reads that as a learned sigma)")
    if problems:
        raise sfumato.SpecError([f"cannot write a diffusers folder for this DiT: {p}" for p in problems])
    config: dict[str, Any] = {
        "_class_name": CLASS_NAMES[spec.norm_type], "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        "num_attention_heads": spec.num_attention_heads, "attention_head_dim": spec.attention_head_dim,
        "in_channels": spec.in_channels, "out_channels": spec.network_out_channels, "num_layers": spec.num_layers,
        "dropout": spec.dropout, "attention_bias": spec.attention_bias, "sample_size": spec.sample_size,
        "patch_size": spec.patch_size, "activation_fn": "gelu-approximate", "upcast_attention": False,
        "norm_type": spec.norm_type, "norm_elementwise_affine": False, "norm_eps": spec.norm_eps,
    }
    if spec.norm_type == "ada_norm_zero":
        config["num_embeds_ada_norm"] = spec.num_classes
    else:
        config.update(
            cross_attention_dim=spec.context_dim, caption_channels=spec.caption_channels,
            interpolation_scale=spec.interpolation_scale, use_additional_conditions=spec.micro_conditions,
        )
    return config


def read_config(path: Path) -> dict[str, Any]:
    """A folder's ``config.json`` as a dict; malformed text or another top level is a ``SpecError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise sfumato.SpecError(f"malformed JSON: {exc.msg} (line {exc.lineno})", source=str(path)) from None
    except UnicodeDecodeError:
        raise sfumato.SpecError("not UTF-8 text", source=str(path)) from None
    if not isinstance(data, dict):
        raise sfumato.SpecError(f"expected a JSON object, found {type(data).__name__}", source=str(path))
    return data


def load_diffusers_folder(folder: str | Path) -> tuple[DiTSpec, dict[str, Tensor]]:
    """Read a diffusers DiT / PixArt folder into ``(spec, state_dict)``."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise sfumato.WeightsError(f"{folder}: not a diffusers component folder (no {CONFIG_NAME})")
    try:
        spec = spec_from_diffusers_config(read_config(folder / CONFIG_NAME))
    except sfumato.SpecError as exc:
        raise sfumato.SpecError(exc.problems, source=exc.source or str(folder / CONFIG_NAME)) from None
    if (folder / SHARD_INDEX_NAME).is_file():
        shards = sorted(set(read_config(folder / SHARD_INDEX_NAME).get("weight_map", {}).values()))
        return spec, {k: v for shard in shards for k, v in sfumato.load_weights(folder / shard).items()}
    weights = folder / WEIGHTS_NAME
    if not weights.is_file() and (folder / PICKLE_WEIGHTS_NAME).is_file():
        weights = folder / PICKLE_WEIGHTS_NAME  # refused by load_weights, with how to convert it
    return spec, sfumato.load_weights(weights)


def save_diffusers_folder(spec: DiTSpec, state_dict: Mapping[str, Tensor], folder: str | Path) -> Path:
    """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` into ``folder``."""
    folder = Path(folder)
    config = json.dumps(diffusers_config_from_spec(spec), indent=2)
    sfumato.atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config))
    sfumato.save_weights(state_dict, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    return folder


def read_dit_weights(path: str | Path, spec: DiTSpec) -> dict[str, Tensor]:
    """The state dict at ``path`` (a diffusers folder or a safetensors file), after checking that
    the architecture it records (the folder's config, or the spec ``sfumato.save_component``
    wrote into the file) is ``spec``'s: a ``SpecError`` lists each field to change."""
    if Path(path).is_dir():
        recorded, state_dict = load_diffusers_folder(path)
    else:
        state_dict = sfumato.load_weights(path)
        saved = sfumato.read_component_spec(path)
        recorded = None
        if saved and saved.get("type") == "dit":
            try:
                recorded = DiTSpec.model_validate(saved)
            except ValidationError as exc:
                raise sfumato.SpecError(f"the dit spec recorded in this file is not one this version reads: {exc}",
                                        source=str(path)) from None
    if recorded is not None:
        check_architecture(spec, recorded, str(path))
    return state_dict


def check_architecture(spec: DiTSpec, recorded: DiTSpec, source: str) -> None:
    """Raise a ``SpecError`` naming every architecture field where ``spec`` differs from the
    ``recorded`` architecture of the weights at ``source``."""
    ours, theirs = (dict(s.model_dump(exclude=NOT_ARCHITECTURE), out_channels=s.prediction_channels)
                    for s in (spec, recorded))
    differences = [name for name in ours if ours[name] != theirs[name]]
    if differences:
        fixes = ", ".join(f"remove {name}" if theirs[name] is None else f"{name} = {toml_value(theirs[name])}"
                          for name in differences)
        raise sfumato.SpecError(
            [f"[denoiser] {name} = {toml_value(ours[name])}, but the weights were trained with {toml_value(theirs[name])}"
             for name in differences] + [f"to load these weights, in [denoiser]: {fixes}"],
            source=source,
        )


def toml_value(value: Any) -> str:
    """A field value as a spec file writes it (``true``, ``"sincos"``, ``12``); None is ``unset``."""
    return "unset" if value is None else json.dumps(value)
