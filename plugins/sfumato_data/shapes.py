"""``shapes``: procedural images of coloured circles, squares and triangles with captions and the
attributes of every object, the dataset that exists on every machine.

Item ``i`` of a given seed is always the same: it is drawn from a generator seeded with
``(seed, i)`` alone, so items can be read in any order, by any worker. Shapes are never flipped
or cropped (that would make "left", "above" and the recorded boxes wrong).
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import sfumato
from pydantic import Field, field_validator, model_validator

from . import shapes_vocab
from .shapes_captions import scene_captions
from .shapes_scene import SCENE_KINDS, Scene, SceneKind, render_scene, sample_scene
from .shapes_vocab import BACKGROUND, COLORS, MAX_OBJECTS, SHAPES
from .transforms import to_tensor


Channel = Annotated[int, Field(ge=0, le=255)]


class ShapesDataset(sfumato.Dataset):
    """Seeded, procedural shapes scenes; see ``shapes_scene`` for the scene kinds and
    ``shapes_captions`` for the caption templates."""

    #: The ``shapes_vocab`` module (palette, shapes, relations, ``object_phrase``, ...): other
    #: plugins read shapes images with it as ``registry.get("dataset", "shapes").vocabulary``.
    vocabulary: ClassVar[ModuleType] = shapes_vocab

    class Spec(sfumato.ComponentSpec):
        type: Literal["shapes"] = "shapes"
        resolution: int = Field(64, ge=8, description="Side of the square images, in pixels.")
        length: int = Field(10_000, ge=1, description="Number of items; item i is the same for every length.")
        seed: int = Field(0, ge=0, description="Seed of the scenes; a different seed is a different dataset.")
        scenes: list[SceneKind] = Field(
            default_factory=lambda: list(SCENE_KINDS),
            description="Scene kinds to draw, chosen uniformly per item: single (one object in a region), "
            "pair (two objects and a relation), count (same shape and colour), mixed (three or more).",
        )
        max_objects: int = Field(MAX_OBJECTS, ge=1, le=MAX_OBJECTS, description="Most objects in one scene.")
        supersample: int = Field(
            4, ge=1, le=16, description="Draw at resolution x supersample, then box-filter down (anti-aliasing)."
        )
        background: tuple[Channel, Channel, Channel] = Field(
            BACKGROUND, strict=False, description="Background colour as RGB in 0..255."
        )

        @field_validator("scenes")
        @classmethod
        def _some_scenes(cls, scenes: list[str]) -> list[str]:
            if not scenes:
                raise ValueError(f"name at least one scene kind of {list(SCENE_KINDS)}")
            return list(dict.fromkeys(scenes))

        @model_validator(mode="after")
        def _scenes_fit(self):
            needs = {"single": 1, "pair": 2, "count": 2, "mixed": 3}
            too_big = [kind for kind in self.scenes if needs[kind] > self.max_objects]
            if too_big:
                raise ValueError(
                    f"scenes {too_big} need more objects than max_objects = {self.max_objects}; "
                    "raise max_objects or drop them from scenes"
                )
            return self

    def __len__(self) -> int:
        return self.spec.length

    def scene(self, index: int) -> Scene:
        """The scene of item ``index`` (objects and relation), without drawing it."""
        if not 0 <= index < len(self):
            raise IndexError(f"shapes index {index} out of range for length {len(self)}")
        rng = np.random.default_rng([self.spec.seed, index])
        return sample_scene(rng, list(self.spec.scenes), self.spec.max_objects)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``image`` [3, H, W] in [-1, 1], ``caption`` (one of ``captions``, chosen by the seed),
        ``captions`` (every true caption) and ``attributes`` (see ``scene_attributes``)."""
        index = int(index)
        if index < 0:
            index += len(self)
        scene = self.scene(index)
        spec = self.spec
        image = render_scene(scene, spec.resolution, spec.supersample, spec.background)
        tagged = scene_captions(scene)
        choice = int(np.random.default_rng([spec.seed, index, 1]).integers(len(tagged)))
        tag, caption = tagged[choice]
        attributes = scene_attributes(scene)
        attributes["caption_tag"] = tag
        return {
            "image": to_tensor(image),
            "caption": caption,
            "captions": [text for _, text in tagged],
            "attributes": attributes,
        }


def scene_attributes(scene: Scene) -> dict[str, Any]:
    """What a scene holds, in plain JSON types (normalised coordinates, y down):

    ``scene`` (kind), ``objects`` (per object: ``shape``, ``color``, ``size``, ``center``,
    ``bbox`` ``[x0, y0, x1, y1]``, ``region``), ``counts`` (objects per shape),
    ``color_counts`` (objects per colour), ``relations`` (``[i, relation, j]`` for ``i < j``)
    and ``relation`` (the one a pair scene was built for, else None).
    """
    shapes = Counter(obj.shape for obj in scene.objects)
    colors = Counter(obj.color for obj in scene.objects)
    return {
        "scene": scene.kind,
        "objects": [obj.to_attributes() for obj in scene.objects],
        "counts": {shape: shapes[shape] for shape in SHAPES},
        "color_counts": {color: colors[color] for color in COLORS},
        "relations": [list(r) for r in scene.relations()],
        "relation": scene.relation,
    }
