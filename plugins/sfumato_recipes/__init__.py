"""sfumato_recipes: the training recipes, as ``train-*`` tasks run by the core harness.

=====================  ==================================================================
task                   trains
=====================  ==================================================================
train-clip             CLIP text and image encoders from scratch (symmetric InfoNCE)
train-clip-finetune    new projection heads (and optionally the towers) on label prompts
                       (CIFAR-10, cross-entropy) or captions (Flickr8k, contrastive)
train-vae              a KL autoencoder: L1/L2 reconstruction + weighted KL
train-diffusion        a denoiser, pixel or latent, unconditional, class- or text-conditional
train-classifier       a noise-aware classifier for classifier guidance
train-lora             LoRA factors on a text-to-image denoiser (and text encoder), base frozen,
                       on captioned images or one instance prompt (DreamBooth, prior preservation)
=====================  ==================================================================

``sfumato train SPEC`` runs them; docs/training.md lists every field.
"""

from __future__ import annotations

import sfumato

from .classifier_task import TrainClassifier
from .clip_tasks import FinetuneHeads, TrainCLIP, TrainCLIPFinetune
from .diffusion_task import TrainDiffusion
from .lora_task import TrainLoRA
from .vae_task import TrainVAE

SFUMATO_PLUGIN_API = 1

TASKS = (TrainCLIP, TrainCLIPFinetune, TrainVAE, TrainDiffusion, TrainClassifier, TrainLoRA)


@sfumato.hookimpl
def register_components(register):
    """Register the training tasks."""
    for task in TASKS:
        register(task)


__all__ = ["SFUMATO_PLUGIN_API", "TASKS", "FinetuneHeads", "TrainCLIP", "TrainCLIPFinetune", "TrainVAE", "TrainDiffusion",
           "TrainClassifier", "TrainLoRA"]
