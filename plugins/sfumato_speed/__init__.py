"""First-party speedups (``[[speedups]]``, ``sfumato.Speedup``): step caches and token merging.

- ``deepcache``: reuse a U-Net's deep features between refresh steps (Ma et al. 2023);
- ``first-block-cache``: skip a transformer's blocks but the first while its residual barely
  changes (ParaAttention's FBCache, as diffusers' ``apply_first_block_cache``);
- ``taylorseer``: forecast a transformer's features by a Taylor series in the step (Liu et al.
  2025, as diffusers' ``apply_taylorseer_cache``);
- ``tome``: merge redundant image tokens before the U-Net's self-attention (Bolya & Hoffman 2023).

Each is built on the model-patch points the denoiser advertises (``sfumato.model_patches``) and
the run's step (``sfumato.SamplerStep``), through sfumato's public API. See docs/speed.md.
"""

from __future__ import annotations

import sfumato

from .deepcache import DeepCache
from .first_block import FirstBlockCache
from .taylorseer import TaylorSeer
from .tome import TokenMerging

SFUMATO_PLUGIN_API = 1

COMPONENTS = (DeepCache, FirstBlockCache, TaylorSeer, TokenMerging)


@sfumato.hookimpl
def register_components(register):
    for component in COMPONENTS:
        register(component)
