"""``[[controlnet]]``: the ControlNet kind and its diffusers-format type.

Each ``[[controlnet]]`` item takes part in generation through the two methods of
``sfumato.conditioners``:

- ``extra_conditioning`` puts its control image (the call's ``control_image``, resized to the
  call's size, in [0, 1]) into the conditioning's extras as ``control_image.<i>`` (``i``: its place
  in the list), for the positive and the negative alike, so classifier-free guidance batches it
  with the rest, as diffusers' pipelines do;
- ``wrap_denoiser`` runs the network beside every denoiser forward, on the same ``x`` and ``t``,
  and adds its residuals, times ``scale``, to the extras the U-Net reads
  (``down_block_residual.<i>``, ``mid_block_residual``); several ControlNets add up
  (diffusers' ``MultiControlNetModel``). Outside its ``start``-``end`` window of the run's steps
  (fractions, diffusers' ``control_guidance_start`` / ``control_guidance_end``) it does not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import Field, model_validator
from torch import Tensor, nn

import sfumato

from .ldm import controlnet_state_dict_from_ldm, is_ldm_controlnet
from .model import WEIGHTS_NAME, ControlNetwork, read_config

#: The architecture of SD 1.5's ControlNets (lllyasviel's v1.0 and v1.1): diffusers' ControlNetModel
#: defaults but for the text width.
SD15_CONTROLNET: dict[str, Any] = {"cross_attention_dim": 768}


class ControlNet(sfumato.Component, nn.Module):
    """The interface of the ``controlnet`` kind (``[[controlnet]]``): a side network that reads
    the denoiser's input and a control image and returns residuals for the U-Net."""

    kind: ClassVar[str] = "controlnet"
    call_inputs: ClassVar[tuple[str, ...]] = ("control_image",)


class DiffusersControlNetSpec(sfumato.ComponentSpec):
    type: Literal["controlnet"] = "controlnet"
    weights: sfumato.SpecPath | None = Field(
        None, description="A diffusers ControlNetModel folder (config.json + diffusion_pytorch_model.safetensors), "
        "or a single .safetensors file: in diffusers' names or the original layout (control_model.* keys), its "
        "architecture from a config.json beside it, else from 'architecture'.")
    architecture: dict[str, Any] = Field(
        default_factory=lambda: dict(SD15_CONTROLNET), description="For a single file without a config.json beside "
        "it: diffusers ControlNetModel config entries (diffusers' defaults for the others). Default: SD 1.5's "
        "ControlNets (cross_attention_dim 768).")
    scale: float = Field(1.0, description="The residuals' weight (diffusers' controlnet_conditioning_scale).")
    start: float = Field(0.0, ge=0.0, le=1.0, description="The fraction of the steps at which it starts to act "
                         "(diffusers' control_guidance_start).")
    end: float = Field(1.0, ge=0.0, le=1.0, description="The fraction of the steps after which it stops "
                       "(diffusers' control_guidance_end).")

    @model_validator(mode="after")
    def _window(self) -> DiffusersControlNetSpec:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class DiffusersControlNet(ControlNet):
    """A ControlNet in diffusers' ``ControlNetModel`` format (``model.py``)."""

    Spec = DiffusersControlNetSpec

    def __init__(self, spec: DiffusersControlNetSpec):
        super().__init__()
        self.spec = spec
        if spec.weights is None:
            raise sfumato.SpecError("[[controlnet]] needs weights: a diffusers ControlNetModel folder")
        path = Path(spec.weights)
        if path.is_dir():
            config, weights = read_config(path), path / WEIGHTS_NAME
            if not weights.is_file():
                raise sfumato.WeightsError(f"{path}: {WEIGHTS_NAME} is missing")
        else:
            beside = path.with_name("config.json")
            config, weights = read_config(path.parent) if beside.is_file() else dict(spec.architecture), path
        self.network = ControlNetwork(config)
        state = sfumato.load_weights(weights)
        if is_ldm_controlnet(list(state)):
            state = controlnet_state_dict_from_ldm(state, config, str(weights))
        sfumato.load_into(self.network, state, source=str(weights))
        self.image_key: str | None = None

    # -- sfumato.conditioners ------------------------------------------------------------------

    def extra_conditioning(self, cond: sfumato.Conditioning, request: Any) -> sfumato.Conditioning:
        """The control image of this ControlNet as extras ``control_image.<i>`` ``[B, 3, H, W]``."""
        index = sum(1 for name in cond.extras if name.startswith("control_image."))
        nets = request.pipe.component("controlnet") or [self]
        image = request.inputs.get("control_image")
        if image is None:
            raise sfumato.ArgumentError("control_image", f"this pipeline has {len(nets)} [[controlnet]]: give "
                                        "control_image=" + ("an image" if len(nets) == 1 else f"a list of {len(nets)} images"))
        if len(nets) > 1:
            if not isinstance(image, (list, tuple)) or len(image) != len(nets):
                raise sfumato.ArgumentError("control_image", f"{len(nets)} ControlNets need a list of {len(nets)} "
                                            "images, one each, in [[controlnet]] order")
            image = image[index]
        pixels = control_pixels(image, request.height, request.width)  # (1 or B, 3, H, W) in [0, 1]
        batch = cond.batch_size or request.batch_size
        if pixels.shape[0] not in (1, batch):
            raise sfumato.ArgumentError("control_image", f"{pixels.shape[0]} control images for {batch} samples")
        pixels = pixels.expand(batch, -1, -1, -1).to(request.pipe.device, request.pipe.dtype)
        self.image_key = f"control_image.{index}"
        return cond.with_extras({self.image_key: pixels})

    def wrap_denoiser(self, denoiser, context):
        """Every forward: the network's residuals times ``scale`` added to the U-Net's extras, inside
        the step window."""
        key, spec = self.image_key, self.spec

        def with_control(x: Tensor, t: Tensor, cond: sfumato.Conditioning) -> Tensor:
            step = context.step
            if step.count and (step.index / step.count < spec.start or (step.index + 1) / step.count > spec.end):
                return denoiser(x, t, cond)
            if key is None or key not in cond.extras:
                raise sfumato.ArgumentError("control_image", "the conditioning holds no control image for this "
                                            "ControlNet: build it with sfumato.conditioners.extra_conditioning "
                                            "(sfumato.generate does) and give control_image=")
            residuals = self.network(x, t, cond, cond.extras[key])
            extras = dict(cond.extras)
            for name, value in residuals.items():
                value = value * spec.scale
                extras[name] = extras[name] + value if name in extras else value
            return denoiser(x, t, sfumato.Conditioning(tokens=cond.tokens, pooled=cond.pooled, labels=cond.labels,
                                                        mask=cond.mask, negative=cond.negative, extras=extras))

        return with_control


def control_pixels(image: Any, height: int, width: int) -> Tensor:
    """A control image as ``[B, 3, H, W]`` in [0, 1]: a PIL image (resized to the call's size,
    as diffusers' image processor does) or a tensor already in [0, 1]."""
    if isinstance(image, Tensor):
        pixels = image if image.dim() == 4 else image[None]
        if tuple(pixels.shape[-2:]) != (height, width) or pixels.shape[1] != 3:
            raise sfumato.ArgumentError("control_image", f"a tensor control image must be [B, 3, {height}, {width}] "
                                        f"in [0, 1]; got {list(pixels.shape)}")
        return pixels.float()
    if not isinstance(image, Image.Image):
        raise sfumato.ArgumentError("control_image", f"expected a PIL image or a [B, 3, H, W] tensor, got "
                                    f"{type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return sfumato.from_pil(image) / 2 + 0.5
