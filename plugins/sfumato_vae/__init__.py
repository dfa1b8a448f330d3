"""sfumato_vae: autoencoders between images and the latents a denoiser works in.

- ``vae-kl`` (``AutoencoderKL``): the KL autoencoder of Stable Diffusion, loadable from
  diffusers folders and SD 1.x single-file checkpoints.
- ``identity`` (``IdentityAutoencoder``): pixel space, for models that denoise images directly.
"""

from __future__ import annotations

import sfumato

from .autoencoder_kl import AutoencoderKL, Reconstruction, sd1_spec, strip_ldm_prefix, vae_state_dict_from_ldm
from .formats import SD1_CONFIG
from .identity import IdentityAutoencoder
from .posterior import DiagonalGaussian

SFUMATO_PLUGIN_API = 1

__all__ = [
    "SD1_CONFIG", "AutoencoderKL", "DiagonalGaussian", "IdentityAutoencoder", "Reconstruction", "sd1_spec",
    "strip_ldm_prefix", "vae_state_dict_from_ldm",
]


@sfumato.hookimpl
def register_components(register):
    register(AutoencoderKL)
    register(IdentityAutoencoder)
