"""``vae-kl``: the KL-regularised autoencoder of Latent Diffusion / Stable Diffusion.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
(https://arxiv.org/abs/2112.10752): a convolutional encoder maps an image to a diagonal Gaussian
over latents ``downscale`` times smaller per side, a decoder maps latents back; a small KL term
keeps the latent space close to N(0, I). The denoiser sees latents scaled to roughly unit
variance: ``(z - shift_factor) * scaling_factor`` (sec. 4.3.2 and D.1 of the paper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

import sfumato

from .formats import (
    ATTENTION_PROJECTION, DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS, LDM_PREFIX, SD1_CONFIG, Format,
    diffusers_config, foreign_key, read_json, spec_fields_from_diffusers,
)
from .networks import Architecture, Decoder, Encoder
from .posterior import DiagonalGaussian
from .tiling import apply_tiled


class Reconstruction(NamedTuple):
    """What a training step needs: the decoded ``images`` and the ``posterior`` they came from
    (its ``kl()`` is the regulariser)."""

    images: Tensor
    posterior: DiagonalGaussian


class AutoencoderKL(sfumato.Autoencoder):
    """Images ``[B, 3, H, W]`` in [-1, 1] <-> scaled latents ``[B, latent_channels, H/f, W/f]``
    with ``f = downscale = 2 ** (len(block_out_channels) - 1)``.

    ``encode`` returns the posterior's mode (its mean) unless a ``generator`` is given or the
    spec sets ``sample_posterior``, in which case it returns a sample: pipelines want the
    deterministic mean for image-to-image, training wants samples. ``decode`` does not clamp.

    Memory switches for large inputs, set on the instance (they are runtime choices, not part
    of the model): ``enable_slicing()`` runs a batch one image at a time (identical results);
    ``enable_tiling()`` runs overlapping tiles and blends them (approximate, bounded memory).
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["vae-kl"] = "vae-kl"
        in_channels: int = Field(3, gt=0, description="Channels of the input images.")
        out_channels: int = Field(3, gt=0, description="Channels of the decoded images.")
        latent_channels: int = Field(4, gt=0, description="Channels of the latents the denoiser sees.")
        block_out_channels: list[int] = Field(
            [128, 256, 512, 512], min_length=1,
            description="Width of each resolution stage, highest resolution first; every stage but "
            "the last halves the resolution, so downscale = 2 ** (len - 1).",
        )
        layers_per_block: int = Field(
            2, gt=0, description="ResNet blocks per encoder stage (the decoder has one more per stage)."
        )
        norm_num_groups: int = Field(32, gt=0, description="Groups of every GroupNorm; must divide every width.")
        mid_block_attention: bool = Field(True, description="Self-attention between the two mid ResNet blocks.")
        use_quant_conv: bool = Field(True, description="1x1 conv on the encoder's moments (as in SD 1.x).")
        use_post_quant_conv: bool = Field(True, description="1x1 conv on the latents before decoding (as in SD 1.x).")
        scaling_factor: float = Field(
            0.18215, description="Latents are multiplied by this for the denoiser (0.18215 for SD 1.x)."
        )
        shift_factor: float = Field(0.0, description="Subtracted from the latents before scaling (0 for SD 1.x).")
        sample_posterior: bool = Field(
            False, description="encode() samples from the posterior even without a generator (else the mean)."
        )
        weights: sfumato.SpecPath | None = Field(
            None, description="Weights to load, format auto-detected: a sfumato or diffusers safetensors file, a "
            "diffusers AutoencoderKL folder, or an SD 1.x single-file checkpoint (its first_stage_model.* keys) "
            "or LDM VAE file.",
        )

        @model_validator(mode="after")
        def _groups_divide_widths(self):
            bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
            if bad:
                raise ValueError(
                    f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                    f"entry; {bad} are not multiples of it"
                )
            return self

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec
        self.latent_channels = spec.latent_channels
        self.downscale = 2 ** (len(spec.block_out_channels) - 1)
        arch = Architecture(spec.block_out_channels, spec.layers_per_block, spec.norm_num_groups,
                            spec.mid_block_attention)
        moments = 2 * spec.latent_channels
        self.encoder = Encoder(spec.in_channels, moments, arch)
        self.decoder = Decoder(spec.latent_channels, spec.out_channels, arch)
        self.quant_conv = nn.Conv2d(moments, moments, 1) if spec.use_quant_conv else nn.Identity()
        self.post_quant_conv = (
            nn.Conv2d(spec.latent_channels, spec.latent_channels, 1) if spec.use_post_quant_conv else nn.Identity()
        )
        self.slicing = False
        self.tiling = False
        self.tile_latent_size = 64
        self.tile_latent_overlap = 16

    @classmethod
    def from_spec(cls, spec: Spec | dict, **context) -> AutoencoderKL:
        """Build from the spec and, when ``spec.weights`` is set, load that file strictly."""
        model = super().from_spec(spec, **context)
        if model.spec.weights:
            path = Path(model.spec.weights)
            path = path / DIFFUSERS_WEIGHTS if path.is_dir() else path
            state = sfumato.load_weights(path)
            fmt = weights_format(state)
            if fmt == "sfumato":
                sfumato.load_into(model, state, source=str(path))
            else:
                model.load_foreign(strip_ldm_prefix(state) if fmt == "ldm" else state, fmt, str(path))
        return model

    # -- other checkpoint formats ---------------------------------------------------------------

    def foreign_keys(self, fmt: Format) -> dict[str, str]:
        """Every key of this model's state dict -> its name in checkpoint format ``fmt``."""
        stages = len(self.spec.block_out_channels)
        return {key: foreign_key(key, fmt, stages) for key in self.state_dict()}

    def convert_foreign(self, state_dict: dict[str, Tensor], fmt: Format) -> dict[str, Tensor]:
        """A state dict in format ``fmt`` renamed to this model's keys (LDM's 1x1-conv attention
        weights reshaped to linear ones). Keys with no counterpart keep their name, so loading
        reports them as unexpected."""
        ours = {theirs: key for key, theirs in self.foreign_keys(fmt).items()}
        converted = {}
        for name, tensor in state_dict.items():
            key = ours.get(name, name)
            if fmt == "ldm" and ATTENTION_PROJECTION.match(key) and tensor.ndim == 4:
                tensor = tensor[:, :, 0, 0]  # 1x1 conv (C, C, 1, 1) -> linear (C, C)
            converted[key] = tensor
        return converted

    def load_foreign(self, state_dict: dict[str, Tensor], fmt: Format, source: str) -> AutoencoderKL:
        """Strictly load a state dict in format ``fmt``; an error lists every missing,
        unexpected or mis-shaped key."""
        sfumato.load_into(self, self.convert_foreign(state_dict, fmt), source=source)
        return self

    @classmethod
    def spec_from_diffusers_config(cls, path: str | Path, **spec_fields) -> Spec:
        """The spec for a diffusers ``config.json``; ``spec_fields`` override its entries."""
        return cls.Spec(**{**spec_fields_from_diffusers(read_json(Path(path)), str(path)), **spec_fields})

    @classmethod
    def from_diffusers(cls, folder: str | Path, **spec_fields) -> AutoencoderKL:
        """Load a diffusers ``AutoencoderKL`` folder (``config.json`` and
        ``diffusion_pytorch_model.safetensors``). ``spec_fields`` override the config's."""
        folder = Path(folder)
        spec = cls.spec_from_diffusers_config(folder / DIFFUSERS_CONFIG, **spec_fields)
        weights = folder / DIFFUSERS_WEIGHTS
        return cls.from_spec(spec).load_foreign(sfumato.load_weights(weights), "diffusers", str(weights))

    def to_diffusers(self, folder: str | Path) -> Path:
        """Write a folder that ``diffusers.AutoencoderKL.from_pretrained`` loads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = diffusers_config(self.spec, sample_size=self.tile_latent_size * self.downscale)
        (folder / DIFFUSERS_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        state = self.state_dict()
        renamed = {theirs: state[key] for key, theirs in self.foreign_keys("diffusers").items()}
        sfumato.save_weights(renamed, folder / DIFFUSERS_WEIGHTS, {"format": "pt"})
        return folder

    @classmethod
    def from_ldm(
        cls, path: str | Path, config: str | Path = SD1_CONFIG, allow_pickle: bool = False, **spec_fields
    ) -> AutoencoderKL:
        """Load the autoencoder of a Stable Diffusion 1.x single-file checkpoint (the
        ``first_stage_model.*`` entries; other entries are ignored). ``config`` is a diffusers
        config for the architecture (default: the shipped SD 1.x one). Pickle checkpoints
        (``.ckpt``) load only with ``allow_pickle=True``."""
        spec = cls.spec_from_diffusers_config(config, **spec_fields)
        state = strip_ldm_prefix(sfumato.load_weights(path, allow_pickle=allow_pickle))
        return cls.from_spec(spec).load_foreign(state, "ldm", str(path))

    # -- runtime switches -----------------------------------------------------------------------

    def enable_slicing(self, enabled: bool = True) -> AutoencoderKL:
        """Encode and decode a batch one image at a time (same results, less peak memory)."""
        self.slicing = enabled
        return self

    def enable_tiling(self, enabled: bool = True, tile_latent_size: int = 64, overlap: int = 16) -> AutoencoderKL:
        """Encode and decode inputs larger than one tile in overlapping tiles, blended linearly
        across the overlaps. Sizes are in latent pixels (64 = a 512-pixel image tile for SD)."""
        if not 0 <= overlap < tile_latent_size:
            raise ValueError(f"overlap must be in [0, tile_latent_size={tile_latent_size}), got {overlap}")
        self.tiling, self.tile_latent_size, self.tile_latent_overlap = enabled, tile_latent_size, overlap
        return self

    def set_attention_backend(self, backend: Literal["sdpa", "math"]) -> None:
        """Choose the mid-block attention kernel (the ``[runtime] attention`` setting)."""
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = backend

    # -- the model ----------------------------------------------------------------------------

    def moments(self, images: Tensor) -> Tensor:
        """``[B, in_channels, H, W] -> [B, 2 * latent_channels, H/f, W/f]``: mean and log-variance."""
        tile = self.tile_latent_size * self.downscale
        if self.tiling and max(images.shape[-2:]) > tile:
            overlap = self.tile_latent_overlap * self.downscale
            return apply_tiled(self.moments_untiled, images, tile, overlap, 1 / self.downscale)
        return self.moments_untiled(images)

    def moments_untiled(self, images: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(images))

    def posterior(self, images: Tensor) -> DiagonalGaussian:
        """The Gaussian over unscaled latents for ``images`` in [-1, 1]."""
        return DiagonalGaussian(self._per_image(self.moments, images))

    def decode_unscaled(self, z: Tensor) -> Tensor:
        """Unscaled latents ``[B, latent_channels, h, w]`` to images ``[B, out_channels, h*f, w*f]``."""
        return self._per_image(self._decode_batch, z)

    def _decode_batch(self, z: Tensor) -> Tensor:
        if self.tiling and max(z.shape[-2:]) > self.tile_latent_size:
            return apply_tiled(self._decode_untiled, z, self.tile_latent_size, self.tile_latent_overlap, self.downscale)
        return self._decode_untiled(z)

    def _decode_untiled(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z))

    def _per_image(self, fn, x: Tensor) -> Tensor:
        if self.slicing and x.shape[0] > 1:
            return torch.cat([fn(one) for one in x.split(1)])
        return fn(x)

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] to scaled latents ``(z - shift_factor) * scaling_factor``, where ``z``
        is a posterior sample (with a ``generator`` or ``sample_posterior``) or its mean."""
        posterior = self.posterior(images)
        z = posterior.sample(generator) if generator is not None or self.spec.sample_posterior else posterior.mode()
        return (z - self.spec.shift_factor) * self.spec.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents to images in [-1, 1] (not clamped)."""
        return self.decode_unscaled(latents / self.spec.scaling_factor + self.spec.shift_factor)

    def forward(self, images: Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> Reconstruction:
        """Reconstruct ``images`` through a posterior sample (or the mean): the training forward."""
        posterior = self.posterior(images)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return Reconstruction(self.decode_unscaled(z), posterior)



def sd1_spec(**fields) -> AutoencoderKL.Spec:
    """The ``vae-kl`` spec of the Stable Diffusion 1.x autoencoder (from the shipped config)."""
    return AutoencoderKL.spec_from_diffusers_config(SD1_CONFIG, **fields)


def weights_format(state_dict: dict[str, Tensor]) -> Format | Literal["sfumato"]:
    """Which key layout a state dict uses: an LDM checkpoint (whole, or the VAE alone), a
    diffusers ``AutoencoderKL`` or sfumato's own."""
    if any(key.startswith(LDM_PREFIX) or key.startswith("encoder.mid.block_1.") for key in state_dict):
        return "ldm"
    if any(key.startswith(("encoder.mid_block.", "decoder.mid_block.")) for key in state_dict):
        return "diffusers"
    return "sfumato"


def strip_ldm_prefix(state_dict: dict[str, Tensor], prefix: str = LDM_PREFIX) -> dict[str, Tensor]:
    """The autoencoder's entries of a full LDM / SD 1.x checkpoint, with ``prefix`` removed; a
    state dict holding only the autoencoder (no key with ``prefix``) is returned as it is."""
    if not any(key.startswith(prefix) for key in state_dict):
        return dict(state_dict)
    return {key[len(prefix):]: tensor for key, tensor in state_dict.items() if key.startswith(prefix)}


def vae_state_dict_from_ldm(
    state_dict: dict[str, Tensor], spec: AutoencoderKL.Spec | None = None
) -> dict[str, Tensor]:
    """The autoencoder of an LDM / SD 1.x checkpoint as a sfumato ``vae-kl`` state dict.

    :param spec: the architecture (default: SD 1.x); it decides the decoder's stage numbering.
    """
    with torch.device("meta"):  # only the key names are needed, not the weights
        model = AutoencoderKL(spec or sd1_spec())
    return model.convert_foreign(strip_ldm_prefix(state_dict), "ldm")
