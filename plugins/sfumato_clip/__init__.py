"""sfumato_clip: CLIP (https://arxiv.org/abs/2103.00020) for sfumato.

Registers the ``clip-text`` and ``clip-image`` encoders and the ``classify``, ``search``,
``embed``, ``export-clip`` and ``tokenizer`` commands. The model, tokenizer, losses, zero-shot classification, semantic search
and checkpoint conversion are importable from here; see docs/clip.md. Fine-tuning is the
``train-clip-finetune`` recipe (``sfumato_recipes``) and the ``sfumato eval zero-shot`` and
``retrieval`` evaluations are ``sfumato_eval``'s.
"""

from __future__ import annotations

import sfumato

from .checkpoint import clip_from_encoders, export_hf, heads_state, load_clip, read_checkpoint, save_clip
from .config import PRESETS, CLIPConfig, TextConfig, VisionConfig, list_models, resolve_config
from .encoders import CLIPImageEncoder, CLIPTextEncoder
from .heads import HEADS_FILE, ProjectionHead, load_head
from .losses import clip_loss
from .search import SearchIndex, build_index, query_image, query_text, update_index
from .zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier, class_embeddings, ensemble_embeddings
from .model import CLIP, TextTransformer, VisionTransformer
from .tokenizer import TextTokenizer, train_tokenizer

SFUMATO_PLUGIN_API = 1


@sfumato.hookimpl
def register_components(register):
    register(CLIPTextEncoder)
    register(CLIPImageEncoder)


@sfumato.hookimpl
def register_commands(cli):
    from .cli import register
    from .embed_cli import register as register_embed
    from .export_cli import register as register_export
    from .tokenizer_cli import register as register_tokenizer

    register(cli)
    register_embed(cli)
    register_export(cli)
    register_tokenizer(cli)


__all__ = [
    "DEFAULT_TEMPLATES", "SearchIndex", "ZeroShotClassifier", "build_index", "update_index", "class_embeddings",
    "ensemble_embeddings", "clip_loss", "query_image", "query_text", "HEADS_FILE", "ProjectionHead", "load_head",
    "clip_from_encoders", "heads_state", "CLIP", "CLIPConfig", "CLIPImageEncoder", "CLIPTextEncoder", "PRESETS", "TextConfig",
    "TextTokenizer", "TextTransformer", "VisionConfig", "VisionTransformer", "export_hf",
    "list_models", "load_clip", "read_checkpoint", "resolve_config", "save_clip", "train_tokenizer",
]
