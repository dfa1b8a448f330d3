"""The generation tasks. ``pipe(...)`` on a pipeline whose ``task`` is one of these calls ``run``.

Each is ``sfumato.generate`` (the blocks of ``sfumato.blocks`` in order) with the inputs its task
needs checked up front; a task whose flow differs composes the blocks itself, as a third party's
would (docs/architecture.md, "The sampling flow").
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

import sfumato


class GenerationSpec(sfumato.ComponentSpec):
    """Fields every generation task shares: the default output size."""

    height: int | None = Field(None, ge=8, description="Image height in pixels (a multiple of the autoencoder's "
                               "downscale); None: the model's own size (its denoiser's sample_size), else 64.")
    width: int | None = Field(None, ge=8, description="Image width in pixels (a multiple of the autoencoder's "
                              "downscale); None: the model's own size (its denoiser's sample_size), else 64.")


class GenerationTask(sfumato.Task):
    """Checks the call has what the task needs (``needs``), then runs ``sfumato.generate``; the
    size defaults to the task's ``height``/``width``, else the model's own (``blocks.native_size``)."""

    required = ("denoiser", "scheduler", "diffusion")
    #: Keyword arguments a call must provide (``prompt`` may also be the first positional).
    needs: ClassVar[tuple[str, ...]] = ()

    def check(self, prompt: Any, kwargs: dict[str, Any]) -> None:
        """:raises SpecError: naming what the call lacks for this task."""
        given = {"prompt": prompt, **kwargs}
        missing = [name for name in self.needs if given.get(name) is None]
        if missing:
            unused = [name for name in ("prompt", "labels") if given.get(name) is not None and name not in self.needs]
            raise sfumato.SpecError(f"task {self.type_name()!r} needs {', '.join(missing)}"
                                    + (f"; it does not take {', '.join(unused)}" if unused else ""))

    def run(self, pipeline: sfumato.Pipeline, prompt: str | list[str] | None = None, **kwargs: Any):
        self.check(prompt, kwargs)
        return sfumato.generate(pipeline, prompt, **kwargs)


class TextToImage(GenerationTask):
    required = ("text_encoder", "denoiser", "scheduler", "diffusion")
    needs = ("prompt",)

    class Spec(GenerationSpec):
        type: Literal["text-to-image"] = "text-to-image"


class ImageToImage(GenerationTask):
    """Noise an init image to ``strength`` and denoise it (SDEdit, Meng et al. 2021)."""

    needs = ("image",)

    class Spec(GenerationSpec):
        type: Literal["image-to-image"] = "image-to-image"

    def run(self, pipeline, prompt=None, **kwargs):
        kwargs.setdefault("strength", 0.6)
        return super().run(pipeline, prompt, **kwargs)


class Inpaint(GenerationTask):
    """Regenerate the white part of ``mask`` and paste the rest of ``image`` back after decoding
    (``mask_blur`` softens the seam). A model not trained for inpainting has the kept region
    blended back every step (RePaint-style); an inpainting U-Net (SD's 9 input channels) reads the
    mask and the masked image's latents instead."""

    needs = ("image", "mask")

    class Spec(GenerationSpec):
        type: Literal["inpaint"] = "inpaint"


class ClassToImage(GenerationTask):
    needs = ("labels",)

    class Spec(GenerationSpec):
        type: Literal["class-to-image"] = "class-to-image"


class Unconditional(GenerationTask):
    class Spec(GenerationSpec):
        type: Literal["unconditional"] = "unconditional"


TASKS = (TextToImage, ImageToImage, Inpaint, ClassToImage, Unconditional)
