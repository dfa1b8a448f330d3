"""Reading and writing CLIP weights in every format sfumato accepts.

``read_checkpoint`` recognises, by path and keys:

- a sfumato file (keys ``text.*``, ``vision.*``, ``logit_scale``), whose metadata records its
  architecture (``save_clip`` or ``sfumato.save_component`` wrote it);
- a transformers folder (``config.json`` + ``model.safetensors``) of a ``CLIPModel``,
  ``CLIPTextModel(WithProjection)`` or ``CLIPVisionModel(WithProjection)``, keys with or without
  the ``text_model.`` prefix; a bare transformers-layout file takes a ``config.json`` beside it;
- a Stable Diffusion 1.x single file, whose text encoder is OpenAI's ViT-L/14 text tower;
- an open_clip (or OpenAI CLIP) ``.safetensors`` state dict in open_clip's key layout
  (``open_clip_format.py``), its architecture read from the shapes (``quick_gelu`` assumed: a spec
  ``architecture`` may replace it, for open_clip's GELU models);
- a training run folder (``train-clip`` / ``train-clip-finetune`` output, holding ``trained.toml``):
  the towers its ``[text_encoder]`` and ``[image_encoder]`` tables point at, with the run's
  fine-tuning heads and learned logit scale.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import torch
from sfumato import WeightsError, load_into, load_weights, read_component_spec, read_metadata, save_weights
from torch import Tensor

from .config import CLIPConfig, resolve_config
from .heads import HEAD_PREFIX, HEADS_FILE, TEMPERATURE_KEY
from .hf_processor import write_processor_config, write_tokenizer_files
from .open_clip_format import config_from_open_clip, is_open_clip_layout, open_clip_to_sfumato
from .conversion import SD1_TEXT_PREFIX, config_from_hf, config_to_hf, hf_to_sfumato, is_hf_layout, sfumato_to_hf
from .model import CLIP
from .tokenizer import TextTokenizer

CONFIG_METADATA_KEY = "sfumato.clip_config"
#: The spec a training run writes into its output folder (``sfumato.train``).
RUN_SPEC = "trained.toml"
#: The spec fields of an encoder table that name files (resolved against the run folder).
RUN_PATH_FIELDS = ("weights", "head", "tokenizer")
#: Each encoder table of a run and the tower it holds.
RUN_TABLES = {"text": "text_encoder", "vision": "image_encoder"}


def is_run_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a training run's output folder (it holds ``trained.toml``)."""
    return path is not None and Path(path).is_dir() and (Path(path) / RUN_SPEC).is_file()


def run_table(folder: str | Path, table: str) -> dict[str, Any]:
    """The ``[table]`` of a run folder's ``trained.toml``, its file fields made absolute against
    the folder (the trainer writes the run's own files by name, ``heads.safetensors``)."""
    folder = Path(folder)
    try:
        data = tomllib.loads((folder / RUN_SPEC).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{folder / RUN_SPEC}: not a readable run spec ({exc}); the run folder is damaged") from exc
    found = data.get(table)
    if not isinstance(found, dict):
        raise WeightsError(f"{folder / RUN_SPEC} has no [{table}] table, so {folder} holds no CLIP {table.split('_')[0]} "
                           "tower; give the output folder of a train-clip or train-clip-finetune run")
    found = dict(found)
    for name in RUN_PATH_FIELDS:
        value = found.get(name)
        if isinstance(value, str) and value and not value.startswith("builtin:") and not Path(value).is_absolute():
            found[name] = str((folder / value).resolve())
    return found


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


def read_component_spec_value(path: str | Path, name: str) -> Any:
    """Field ``name`` of the component spec a sfumato file records (None for other files)."""
    path = Path(path)
    return (read_component_spec(path) or {}).get(name) if path.is_file() else None


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


def _read_checkpoint(path: str | Path, prefix: str | None = None) -> tuple[dict[str, Tensor], CLIPConfig | None, bool]:
    """``read_checkpoint`` plus whether the config is only assumed (SD 1.x single files record
    none), so that a spec's ``architecture`` may replace it. ``prefix``: read only the file's keys
    under it, without it (one tower of a checkpoint that holds several models)."""
    path = Path(path)
    if prefix and path.is_file() and _has_prefix(path, prefix):
        return _read_prefixed(path, prefix)
    if is_run_folder(path):
        state, config = read_run(path)
        return state, config, False
    if path.is_dir():
        config_file, weights = _hf_folder_files(path)
        state = hf_to_sfumato(load_weights(weights))
        return state, config_from_hf(json.loads(config_file.read_text()), _projection_dim(state)), False
    raw = load_weights(path)
    if is_open_clip_layout(raw):
        return open_clip_to_sfumato(raw), config_from_open_clip(raw), True
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


def _has_prefix(path: Path, prefix: str) -> bool:
    """Whether a safetensors file has keys under ``prefix``: a file of one tower alone (what
    ``sfumato convert`` writes from a multi-model file) is read whole whatever the spec's prefix."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return any(key.startswith(prefix) for key in f.keys())
    except Exception:  # not safetensors: the whole-file reader says what it is
        return False


def _read_prefixed(path: Path, prefix: str) -> tuple[dict[str, Tensor], CLIPConfig | None, bool]:
    """The tower under ``prefix`` of a file holding several models (an SDXL single file's
    ``conditioner.embedders.0.transformer.`` in the transformers layout, ``conditioner.embedders.1.model.``
    in open_clip's): its architecture read from the shapes where the layout allows, assumed."""
    raw = {k[len(prefix):]: v for k, v in load_weights(path).items() if k.startswith(prefix)}
    if not raw:
        raise WeightsError(f"{path} has no keys under the prefix {prefix!r}")
    if is_open_clip_layout(raw):  # a text tower alone records no architecture the shapes tell in full
        return open_clip_to_sfumato(raw), config_from_open_clip(raw) if "visual.conv1.weight" in raw else None, True
    if is_hf_layout(raw):
        return hf_to_sfumato(raw), None, True
    raise WeightsError(f"{path}: the keys under {prefix!r} are neither a transformers nor an open_clip CLIP text "
                       f"tower (they start with {sorted(raw)[:3]})")


def read_run(folder: Path) -> tuple[dict[str, Tensor], CLIPConfig]:
    """Both towers of a run folder as one state dict (``text.*``, ``vision.*``, the heads'
    ``text_head.*`` / ``image_head.*`` and ``logit_scale`` when the run has them) and their config."""
    state: dict[str, Tensor] = {}
    configs: dict[str, CLIPConfig] = {}
    logit_scale = None
    for tower, table in RUN_TABLES.items():
        found = run_table(folder, table)
        if not found.get("weights"):
            raise WeightsError(f"{folder / RUN_SPEC}: [{table}] names no weights; the run saved none for it")
        tower_weights, recorded, _ = _read_checkpoint(found["weights"])
        architecture = found.get("architecture")
        if recorded is None and architecture is not None:
            recorded = resolve_config(architecture if isinstance(architecture, str)
                                      else CLIPConfig.model_validate(architecture))
        if recorded is None:
            raise WeightsError(f"{found['weights']} does not record its architecture and [{table}] of "
                               f"{folder / RUN_SPEC} names none")
        configs[tower] = recorded
        state.update(tower_state(tower_weights, tower, found["weights"]))
        if found.get("head"):
            head = load_weights(found["head"])
            prefix = HEAD_PREFIX[tower]
            state.update({k: v for k, v in head.items() if k.startswith(prefix)})
        logit_scale = found.get("logit_scale", logit_scale)
    text, vision = configs["text"], configs["vision"]
    if text.embed_dim != vision.embed_dim:
        raise WeightsError(f"{folder}: the text tower embeds into {text.embed_dim} dimensions and the image tower "
                           f"into {vision.embed_dim}; they do not form one CLIP")
    if logit_scale is not None:
        state["logit_scale"] = torch.tensor(float(logit_scale))
    return state, CLIPConfig(embed_dim=text.embed_dim, text=text.text, vision=vision.vision,
                             logit_scale_init=text.logit_scale_init, logit_bias_init=text.logit_bias_init)


def resolve_checkpoint(
    weights: str | None, architecture: str | CLIPConfig | None, prefix: str | None = None,
) -> tuple[dict[str, Tensor] | None, CLIPConfig]:
    """The state dict (None without weights) and the architecture for an encoder spec.

    ``architecture`` None means "what the weights file says" (``tiny`` when there are no
    weights); a given architecture must agree with a file that records its own (an SD 1.x single
    file records none: ViT-L/14's text tower is only its default).
    """
    state, recorded, assumed = _read_checkpoint(weights, prefix) if weights else (None, None, False)
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


def save_clip(model: CLIP, path: str | Path, heads: dict[str, Tensor] | None = None) -> Path:
    """Save a full CLIP as safetensors with its config in the metadata; ``heads`` (``text_head.*``,
    ``image_head.*``, from ``heads_state``) go into the same file, where the encoders find them."""
    return save_weights({**model.state_dict(), **(heads or {})}, path,
                        {CONFIG_METADATA_KEY: model.config.model_dump_json()})


def clip_from_encoders(text_encoder: Any, image_encoder: Any) -> CLIP:
    """One ``CLIP`` of a ``clip-text`` and a ``clip-image`` encoder's towers (a run's two tower
    files, or any pair whose embeddings share a width), with the logit scale they record."""
    text, vision = text_encoder.spec.architecture, image_encoder.spec.architecture
    if text_encoder.text.embed_dim != image_encoder.vision.embed_dim:
        raise WeightsError(f"the text tower of {text_encoder.spec.weights} embeds into {text_encoder.text.embed_dim} "
                           f"dimensions and the image tower of {image_encoder.spec.weights} into "
                           f"{image_encoder.vision.embed_dim}; they do not form one CLIP")
    scale = text_encoder.logit_scale if text_encoder.logit_scale is not None else image_encoder.logit_scale
    config = CLIPConfig(embed_dim=text.embed_dim, text=text.text, vision=vision.vision,
                        logit_scale_init=text.logit_scale_init if scale is None else scale,
                        logit_bias_init=text.logit_bias_init)
    model = CLIP(config)
    state = {**{f"text.{k}": v for k, v in text_encoder.text.state_dict().items()},
             **{f"vision.{k}": v for k, v in image_encoder.vision.state_dict().items()},
             "logit_scale": model.logit_scale.detach().clone()}
    if model.logit_bias is not None:
        state["logit_bias"] = model.logit_bias.detach().clone()
    return load_into(model, state, source="the encoders")


def heads_state(text_encoder: Any, image_encoder: Any) -> dict[str, Tensor]:
    """The fine-tuning heads of two encoders as ``text_head.*`` / ``image_head.*`` keys (empty
    without heads; both or neither, since a head maps into a space the other tower must share)."""
    heads = {"text_head": text_encoder.head, "image_head": image_encoder.head}
    if sum(head is not None for head in heads.values()) == 1:
        raise WeightsError("only one of the towers has a fine-tuning head; both embed into the fine-tuned space or "
                           "neither does")
    return {f"{name}.{k}": v for name, head in heads.items() if head is not None for k, v in head.state_dict().items()}


def tower_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CLIP state dict without the fine-tuning heads a file may also hold."""
    return {k: v for k, v in state.items() if not k.startswith(tuple(HEAD_PREFIX.values())) and k != TEMPERATURE_KEY}


def load_clip(path: str | Path, architecture: str | CLIPConfig | None = None) -> CLIP:
    """Build a ``CLIP`` from any supported checkpoint holding both towers (a run folder too: its
    towers and learned logit scale; its fine-tuning heads are the encoders' business, see heads.py)."""
    state, config = resolve_checkpoint(str(path), architecture)
    state = tower_keys(state)
    model = CLIP(config)
    if "logit_scale" not in state:  # a checkpoint of towers only keeps the initial scale
        state = {**state, "logit_scale": model.logit_scale.detach().clone()}
    return load_into(model, state, source=str(path))


def export_hf(model: CLIP, folder: str | Path, tokenizer: TextTokenizer | None = None,
              heads: dict[str, Tensor] | None = None) -> Path:
    """Write a transformers CLIP folder: ``config.json`` + ``model.safetensors`` that
    ``CLIPModel.from_pretrained`` loads, and the tokenizer (``tokenizer``, default the bundled
    OpenAI BPE) and image-processor files that ``CLIPProcessor.from_pretrained`` loads.

    transformers' ``CLIPModel`` has one linear projection per tower and no room for fine-tuning
    heads (an MLP each): ``heads`` are written beside as ``heads.safetensors``, which sfumato's
    encoders apply when they read the folder; ``CLIPModel`` alone gives the towers' own embeddings.
    """
    if model.logit_bias is not None:
        raise WeightsError("transformers' CLIPModel has no logit bias; this model (SigLIP-style) has one")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2))
    save_weights(sfumato_to_hf(model.state_dict()), folder / "model.safetensors", {"format": "pt"})
    write_tokenizer_files(folder, tokenizer or TextTokenizer.bundled(model.config.text.context_length))
    write_processor_config(folder, model.config.vision.image_size)
    if heads:
        save_weights(heads, folder / HEADS_FILE, {"format": "pt"})
    return folder
