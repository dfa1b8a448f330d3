"""sfumato_clip: CLIP (https://arxiv.org/abs/2103.00020) for sfumato.

Registers the ``clip-text`` and ``clip-image`` encoders, the ``classify`` and ``search``
commands and the ``sfumato eval zero-shot`` and ``sfumato eval retrieval`` evaluations. The model, tokenizer, losses, zero-shot classification, semantic search, checkpoint
conversion and the fine-tuning model are importable from here; see docs/clip.md.
"""

from __future__ import annotations

import sfumato

from .checkpoint import export_hf, load_clip, read_checkpoint, save_clip
from .config import PRESETS, CLIPConfig, TextConfig, VisionConfig, list_models, resolve_config
from .encoders import CLIPImageEncoder, CLIPTextEncoder
from .finetune import CLIPFineTuner, ProjectionHead
from .losses import clip_loss, siglip_loss, soft_target_loss
from .metrics import retrieval_recall, topk_accuracy
from .search import SearchIndex, build_index, query_image, query_text
from .zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier, class_embeddings, ensemble_embeddings
from .evaluation import ZeroShotTask, retrieval_scores, zero_shot_scores
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
    from .tokenizer_cli import register as register_tokenizer

    register(cli)
    register_tokenizer(cli)


@sfumato.hookimpl
def register_eval_commands(cli):
    from .eval_cli import register

    register(cli)


__all__ = [
    "CLIPFineTuner", "DEFAULT_TEMPLATES", "ProjectionHead", "SearchIndex", "ZeroShotClassifier",
    "build_index", "class_embeddings", "ensemble_embeddings", "ZeroShotTask", "retrieval_scores", "zero_shot_scores", "clip_loss", "query_image", "query_text", "retrieval_recall",
    "siglip_loss", "soft_target_loss", "topk_accuracy",
    "CLIP", "CLIPConfig", "CLIPImageEncoder", "CLIPTextEncoder", "PRESETS", "TextConfig",
    "TextTokenizer", "TextTransformer", "VisionConfig", "VisionTransformer", "export_hf",
    "list_models", "load_clip", "read_checkpoint", "resolve_config", "save_clip", "train_tokenizer",
]
