"""sfumato_data: the datasets of sfumato.

=============  ===========================================================================
type           what it yields
=============  ===========================================================================
shapes         procedural coloured shapes with captions and per-object attributes
digits         scikit-learn's handwritten digits, upscaled, with labels and captions
cifar10        CIFAR-10 python batches, with labels and "a photo of an airplane" captions
flickr8k       Flickr8k photos with their five captions
imagefolder    your images with metadata.jsonl, captions.csv or class sub-folders
=============  ===========================================================================

It also registers two evaluations (docs/evaluation.md): ``sfumato eval geneval``, a GenEval-style
compositional score on shapes from ``detect_shapes``, and ``sfumato eval digits``, class accuracy
and a Frechet distance from the shipped ``DigitsClassifier``.

Every item is a dict with ``image`` (``[3, H, W]`` float in [-1, 1]) and any of ``caption``,
``captions``, ``label`` and ``attributes``; batch them with ``collate_examples``. The formats and
every Spec field are in docs/datasets.md.
"""

from __future__ import annotations

import sfumato
from sfumato import collate_examples

from .cifar10 import Cifar10Dataset
from .detect import detect_shapes
from .digits import DigitsDataset
from .digits_classifier import DigitsClassifier, load_digits_classifier, train_digits_classifier
from .files import DatasetError
from .flickr8k import Flickr8kDataset
from .frechet import feature_frechet_distance, frechet_distance
from .geneval import GenEvalPrompt
from .imagefolder import ImageFolderDataset
from .shapes import ShapesDataset, scene_attributes
from .shapes_vocab import (
    BACKGROUND,
    COLORS,
    INVERSE_RELATIONS,
    NUMBER_WORDS,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    spatial_relations,
)
from .transforms import ImageTransform, to_image, to_tensor

SFUMATO_PLUGIN_API = 1

DATASETS = (ShapesDataset, DigitsDataset, Cifar10Dataset, Flickr8kDataset, ImageFolderDataset)


@sfumato.hookimpl
def register_components(register):
    """Register the five dataset types."""
    for dataset in DATASETS:
        register(dataset)


@sfumato.hookimpl
def register_eval_commands(cli):
    """Add ``sfumato eval geneval`` and ``sfumato eval digits``."""
    from .eval_cli import register

    register(cli)


__all__ = [
    "SFUMATO_PLUGIN_API", "DATASETS", "DatasetError", "ShapesDataset", "DigitsDataset",
    "Cifar10Dataset", "Flickr8kDataset", "ImageFolderDataset", "collate_examples", "detect_shapes",
    "scene_attributes", "BACKGROUND", "COLORS", "INVERSE_RELATIONS", "NUMBER_WORDS", "REGIONS",
    "RELATIONS", "SHAPES", "SIZES", "spatial_relations", "ImageTransform", "to_image", "to_tensor",
    "DigitsClassifier", "load_digits_classifier", "train_digits_classifier", "feature_frechet_distance",
    "frechet_distance", "GenEvalPrompt",
]
