"""The denoisers the thread and compilation benchmarks time, each with a forward's inputs.

``shapes``: the built-in ``shapes`` model's U-Net (its trained weights), at the batch of 2 a
classifier-free-guided step runs, 16x16 latents, 24 text tokens. ``unet-sd``: the ``unet-sd``
case's SD 1.x topology (``references.UNET_SD``), randomly initialised (timing does not depend on
the weights), batch 2, 32x32 latents, 77 tokens. ``unet-small``: the same topology at half the
latent size and two levels (compilation measured where the full case would take too long).
``dit-s``: a DiT-S/2 (12 identical blocks, width 384, 6 heads), class-conditional, 16x16 latents
(64 tokens), batch 2, randomly initialised.
"""

from __future__ import annotations

from typing import Callable

import torch

import sfumato

from .references import UNET_SD

UNET_SMALL = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32,
)


def _diffusers_topology(config: dict, tokens: int) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    from sfumato_unet import spec_from_diffusers_config

    torch.manual_seed(0)
    spec = spec_from_diffusers_config(config)
    unet = sfumato.build("denoiser", spec).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, config["sample_size"], config["sample_size"], generator=g)
    cond = sfumato.Conditioning(tokens=torch.randn(2, tokens, config["cross_attention_dim"], generator=g))
    t = torch.tensor([999.0, 500.0])
    return unet, lambda model: model(x, t, cond)


def _shapes() -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    pipe = sfumato.load_pipeline("shapes", overrides=["runtime.device=\"cpu\""])
    unet = pipe.denoiser
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    cond = sfumato.Conditioning(tokens=torch.randn(2, 24, 64, generator=g))
    t = torch.tensor([999.0, 500.0])
    return unet, lambda model: model(x, t, cond)


def _dit_s() -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    dit = sfumato.build("denoiser", {"type": "dit", "sample_size": 16, "in_channels": 4, "patch_size": 2,
                                     "num_layers": 12, "num_attention_heads": 6, "attention_head_dim": 64,
                                     "num_classes": 1000}).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    cond = sfumato.Conditioning(labels=torch.tensor([3, 7]))
    t = torch.tensor([999.0, 500.0])
    return dit, lambda model: model(x, t, cond)


DENOISERS: dict[str, Callable[[], tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]]] = {
    "shapes": _shapes,
    "unet-sd": lambda: _diffusers_topology(UNET_SD["full"], 77),
    "unet-small": lambda: _diffusers_topology(UNET_SMALL, 77),
    "dit-s": _dit_s,
}


def build(name: str) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    """``(denoiser, forward)``: ``forward(model)`` runs one forward of ``model`` on fixed inputs."""
    return DENOISERS[name]()
