"""sfumato_eval: the evaluations of sfumato, the ``sfumato eval`` commands (docs/evaluation.md).

=====================  ===================================================  ===================
command                measures                                             module
=====================  ===================================================  ===================
geneval                compositional text-to-image on shapes (GenEval)      ``geneval``,
                                                                            ``geneval_command``
shapes-reconstruction  the shapes detector through a model's autoencoder    ``reconstruction``
digits                 class accuracy and Frechet distance of digits        ``digits``
zero-shot              CLIP zero-shot top-1 / top-5 accuracy on a dataset   ``zero_shot``
retrieval              CLIP recall@1/5/10, image to text and text to image  ``retrieval``
clip-benchmark         CLIP zero-shot, linear / few-shot probes, retrieval  ``clip_benchmark``,
                       over several datasets (CLIP_benchmark)               ``linear_probe``
=====================  ===================================================  ===================

The judges are ``detect_shapes`` (a rule-based detector of shapes images, ``shapes_detector``) and
``DigitsClassifier`` (a small CNN whose weights ship beside it, ``digits_classifier``); the
Frechet distance is in ``frechet``. Like a third-party plugin, this one imports no other plugin:
it builds datasets and encoders with ``sfumato.build`` and reads the ``shapes`` vocabulary and
the ``digits`` caption from the registered dataset classes (``datasets``), as open_clip keeps
``open_clip_train`` apart from the library.
"""

from __future__ import annotations

import sfumato

from .clip_benchmark import add_clip_benchmark_command
from .digits import add_digits_command, evaluate_digits, generate_digits
from .digits_classifier import DigitsClassifier, load_digits_classifier, train_digits_classifier
from .frechet import feature_frechet_distance, frechet_distance
from .geneval import GenEvalPrompt, evaluate, prompt_set, summarise
from .geneval_command import add_geneval_command
from .reconstruction import add_reconstruction_command, reconstruction_report
from .linear_probe import LinearProbe, few_shot_probe, linear_probe
from .retrieval import add_retrieval_command, retrieval_recall, retrieval_scores
from .shapes_detector import detect_shapes
from .zero_shot import ZeroShotTask, add_zero_shot_command, topk_accuracy, zero_shot_scores

SFUMATO_PLUGIN_API = 1


@sfumato.hookimpl
def register_eval_commands(cli):
    """Add ``geneval``, ``shapes-reconstruction``, ``digits``, ``zero-shot``, ``retrieval`` and
    ``clip-benchmark``."""
    for add in (add_geneval_command, add_reconstruction_command, add_digits_command, add_zero_shot_command,
                add_retrieval_command, add_clip_benchmark_command):
        add(cli)


__all__ = [
    "SFUMATO_PLUGIN_API", "DigitsClassifier", "GenEvalPrompt", "LinearProbe", "few_shot_probe", "linear_probe", "ZeroShotTask", "detect_shapes", "evaluate",
    "evaluate_digits", "feature_frechet_distance", "frechet_distance", "generate_digits", "load_digits_classifier",
    "prompt_set", "reconstruction_report", "retrieval_recall", "retrieval_scores", "summarise", "topk_accuracy",
    "train_digits_classifier", "zero_shot_scores",
]
