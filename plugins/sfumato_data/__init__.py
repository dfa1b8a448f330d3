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

The evaluations that score models on these datasets are a plugin of their own, ``sfumato_eval``;
it reads the shapes vocabulary as ``ShapesDataset.vocabulary`` (this package's ``shapes_vocab``).

Every item is a dict with ``image`` (``[3, H, W]`` float in [-1, 1]) and any of ``caption``,
``captions``, ``label`` and ``attributes``; batch them with ``collate_examples``. The formats and
every Spec field are in docs/datasets.md.
"""

from __future__ import annotations

import sfumato
from sfumato import collate_examples

from .cifar10 import Cifar10Dataset
from .digits import DigitsDataset
from .files import DatasetError
from .flickr8k import Flickr8kDataset
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
    object_phrase,
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


__all__ = [
    "SFUMATO_PLUGIN_API", "DATASETS", "DatasetError", "ShapesDataset", "DigitsDataset",
    "Cifar10Dataset", "Flickr8kDataset", "ImageFolderDataset", "collate_examples",
    "scene_attributes", "BACKGROUND", "COLORS", "INVERSE_RELATIONS", "NUMBER_WORDS", "REGIONS",
    "RELATIONS", "SHAPES", "SIZES", "object_phrase", "spatial_relations", "ImageTransform", "to_image",
    "to_tensor",
]
