"""Print 1 / std of the trained VAE's latents on shapes images: the `scaling_factor` that gives
the diffusion model unit-variance latents (as Stable Diffusion's 0.18215 does for its VAE)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import sfumato

ROOT = Path(__file__).resolve().parents[4]


def main() -> int:
    torch.set_grad_enabled(False)
    vae = sfumato.build("autoencoder", {
        "type": "vae-kl", "weights": str(ROOT / "runs/shapes-vae/autoencoder.safetensors"),
        "block_out_channels": [16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
        "latent_channels": 4, "mid_block_attention": False, "scaling_factor": 1.0,
    }).eval()
    dataset = sfumato.build("dataset", {"type": "shapes", "resolution": 64, "length": 512, "seed": 99})
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    latents = torch.cat([vae.encode(batch) for batch in images.split(64)])
    print(f"{1.0 / latents.std().item():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
