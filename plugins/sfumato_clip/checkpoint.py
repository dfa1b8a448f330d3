"""Reading and writing CLIP weights in every format sfumato accepts.

``read_checkpoint`` recognises, by path and keys:

- a sfumato file (keys ``text.*``, ``vision.*``, ``logit_scale``), whose metadata records its
  architecture (``save_clip`` or ``sfumato.save_component`` wrote it);
- a transformers folder (``config.json`` + ``model.safetensors``) of a ``CLIPModel``,
  ``CLIPTextModel(WithProjection)`` or ``CLIPVisionModel(WithProjection)``, keys with or without
  the ``text_model.`` prefix; a bare transformers-layout file takes a ``config.json`` beside it;
- a Stable Diffusion 1.x single file, whose text encoder is OpenAI's ViT-L/14 text tower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sfumato import WeightsError, load_into, load_weights, read_component_spec, read_metadata, save_weights
from torch import Tensor

from .config import CLIPConfig, resolve_config
from .conversion import SD1_TEXT_PREFIX, config_from_hf, config_to_hf, hf_to_sfumato, is_hf_layout, sfumato_to_hf
from .model import CLIP

CONFIG_METADATA_KEY = "sfumato.clip_config"


def _hf_folder_files(folder: Path) -> tuple[Path, Path]:
    config, weights = folder / "config.json", folder / "model.safetensors"
    for required in (config, weights):
        if not required.is_file():
            raise WeightsError(
                f"{folder}: expected a transformers CLIP folder with config.json and "
                f"model.safetensors; {required.name} is missing"
            )
    return config, weights


def _projection_dim(state: dict[str, Tensor]) -> int | None:
    """The joint embedding width, read from the projection weights (None without them)."""
    for key in ("text.projection.weight", "vision.projection.weight"):
        if key in state:
            return state[key].shape[0]
    return None


def _sd1_text_config() -> CLIPConfig:
    """Stable Diffusion 1.x's text encoder: ViT-L/14's text tower without projection."""
    config = resolve_config("ViT-L/14")
    config.embed_dim = 0
    return config


def _config_from_metadata(path: Path) -> CLIPConfig | None:
    raw = read_metadata(path).get(CONFIG_METADATA_KEY)
    if raw:
        return CLIPConfig.model_validate_json(raw)
    spec = read_component_spec(path) or {}
    architecture = spec.get("architecture")
    if isinstance(architecture, dict):
        return CLIPConfig.model_validate(architecture)
    return resolve_config(architecture) if isinstance(architecture, str) else None


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], CLIPConfig | None]:
    """Load any supported CLIP checkpoint as ``(state dict in sfumato's keys, config)``; the
    config is None when the file does not say (then the spec's ``architecture`` must). For a
    Stable Diffusion 1.x single file it is ViT-L/14's text tower, what SD 1.x uses."""
    state, config, _ = _read_checkpoint(path)
    return state, config


def _read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], CLIPConfig | None, bool]:
    """``read_checkpoint`` plus whether the config is only assumed (SD 1.x single files record
    none), so that a spec's ``architecture`` may replace it."""
    path = Path(path)
    if path.is_dir():
        config_file, weights = _hf_folder_files(path)
        state = hf_to_sfumato(load_weights(weights))
        return state, config_from_hf(json.loads(config_file.read_text()), _projection_dim(state)), False
    raw = load_weights(path)
    if not is_hf_layout(raw):
        return raw, _config_from_metadata(path), False
    sd1 = any(k.startswith(SD1_TEXT_PREFIX) for k in raw)
    state = hf_to_sfumato(raw)
    if sd1:
        return state, _sd1_text_config(), True
    beside = path.with_name("config.json")
    if beside.is_file():
        return state, config_from_hf(json.loads(beside.read_text()), _projection_dim(state)), False
    return state, None, False


def resolve_checkpoint(
    weights: str | None, architecture: str | CLIPConfig | None
) -> tuple[dict[str, Tensor] | None, CLIPConfig]:
    """The state dict (None without weights) and the architecture for an encoder spec.

    ``architecture`` None means "what the weights file says" (``tiny`` when there are no
    weights); a given architecture must agree with a file that records its own (an SD 1.x single
    file records none: ViT-L/14's text tower is only its default).
    """
    state, recorded, assumed = _read_checkpoint(weights) if weights else (None, None, False)
    if architecture is None:
        if weights and recorded is None:
            raise WeightsError(f"{weights} does not record its architecture; set `architecture` in the spec")
        return state, recorded or resolve_config("tiny")
    config = resolve_config(architecture)
    if recorded is not None and not assumed and _towers(recorded) != _towers(config):
        raise WeightsError(
            f"{weights} holds a different architecture than the spec asks for: "
            f"file {recorded.model_dump()} vs spec {config.model_dump()}; drop `architecture` to "
            "use the file's"
        )
    return state, config


def _towers(config: CLIPConfig) -> tuple[Any, ...]:
    return config.embed_dim, config.text, config.vision


def tower_state(state: dict[str, Tensor], tower: str, source: str) -> dict[str, Tensor]:
    """The keys of one tower (``text`` or ``vision``), prefix kept."""
    picked = {k: v for k, v in state.items() if k.startswith(f"{tower}.")}
    if not picked:
        raise WeightsError(f"{source} holds no {tower} tower (keys start with {sorted(state)[:3]}...)")
    return picked


def save_clip(model: CLIP, path: str | Path) -> Path:
    """Save a full CLIP as safetensors with its config in the metadata."""
    return save_weights(model.state_dict(), path, {CONFIG_METADATA_KEY: model.config.model_dump_json()})


def load_clip(path: str | Path, architecture: str | CLIPConfig | None = None) -> CLIP:
    """Build a ``CLIP`` from any supported checkpoint holding both towers."""
    state, config = resolve_checkpoint(str(path), architecture)
    model = CLIP(config)
    if "logit_scale" not in state:  # a checkpoint of towers only keeps the initial scale
        state = {**state, "logit_scale": model.logit_scale.detach().clone()}
    return load_into(model, state, source=str(path))


def export_hf(model: CLIP, folder: str | Path) -> Path:
    """Write a transformers ``CLIPModel`` folder (``config.json`` + ``model.safetensors``) that
    ``CLIPModel.from_pretrained`` loads."""
    if model.logit_bias is not None:
        raise WeightsError("transformers' CLIPModel has no logit bias; this model (SigLIP-style) has one")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2))
    save_weights(sfumato_to_hf(model.state_dict()), folder / "model.safetensors", {"format": "pt"})
    return folder
