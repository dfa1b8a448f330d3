"""Print 1 / std of the trained VAE's latents on shapes images: the `scaling_factor` that gives
the diffusion model unit-variance latents (as Stable Diffusion's 0.18215 does for its VAE).

Usage: ``python -m builds.shapes.latent_scale [RUN]`` from the repository root (default
``runs/shapes-vae``); the VAE's architecture is read from the run's ``trained.toml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import sfumato
from builds.package_model import RUNS, trained_spec


def load_vae(run: Path) -> torch.nn.Module:
    """The run's autoencoder at scaling factor 1 (raw latents)."""
    table = dict(trained_spec(run)["autoencoder"])
    table["weights"] = str(run / table["weights"])  # relative to the run; an absolute path stays
    return sfumato.build("autoencoder", {**table, "scaling_factor": 1.0, "shift_factor": 0.0}).eval()


def main(argv: list[str]) -> int:
    torch.set_grad_enabled(False)
    vae = load_vae(Path(argv[0]) if argv else RUNS / "shapes-vae")
    dataset = sfumato.build("dataset", {"type": "shapes", "resolution": 64, "length": 512, "seed": 99})
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    latents = torch.cat([vae.encode(batch) for batch in images.split(64)])
    print(f"{1.0 / latents.std().item():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
