"""A DiT in a spec file: a tiny class-conditional pipeline (identity autoencoder, DDIM,
classifier-free guidance) generates images, from random weights and from a diffusers folder."""

import pytest
import torch

import sfumato

diffusers = pytest.importorskip("diffusers")

DENOISER = {"type": "dit", "sample_size": 8, "in_channels": 3, "patch_size": 2, "num_layers": 2,
            "num_attention_heads": 2, "attention_head_dim": 8, "num_classes": 4, "learned_sigma": True}


def class_to_image(denoiser: dict, untrained: bool) -> dict:
    return {
        "task": {"type": "class-to-image", "height": 8, "width": 8},
        "runtime": {"allow_untrained": untrained},
        "autoencoder": {"type": "identity"},
        "denoiser": denoiser,
        "diffusion": {"timesteps": 1000, "betas": "linear", "beta_start": 1e-4, "beta_end": 0.02, "prediction": "epsilon"},
        "scheduler": {"type": "ddim", "steps": 3},
        "guidance": [{"type": "cfg", "scale": 3.0}],
    }


def test_untrained_class_conditional_dit_pipeline_generates_images_of_the_right_shape():
    pipe = sfumato.load_pipeline(class_to_image(DENOISER, untrained=True))
    result = pipe(labels=[0, 3], num_images=2, seed=1, progress=False)
    assert result.latents.shape == (4, 3, 8, 8)
    assert [image.size for image in result.images] == [(8, 8)] * 4
    assert torch.isfinite(result.latents).all()


def test_a_diffusers_dit_folder_generates_through_the_weights_field(tmp_path, perturb):
    """``weights = "path/to/transformer"``: diffusers' DiT folder loads into a pipeline unchanged,
    labels reach the class embedding and guidance's negative is the null class."""
    torch.manual_seed(0)
    perturb(diffusers.DiTTransformer2DModel(
        sample_size=8, in_channels=3, out_channels=6, patch_size=2, num_layers=2, num_attention_heads=2,
        attention_head_dim=8, num_embeds_ada_norm=4,
    )).save_pretrained(tmp_path / "transformer")
    pipe = sfumato.load_pipeline(class_to_image({**DENOISER, "weights": str(tmp_path / "transformer")}, untrained=False))
    assert (pipe.denoiser.num_classes, pipe.denoiser.null_label) == (4, 4)
    first, again, other = (pipe(labels=[label], seed=1, progress=False).latents for label in (0, 0, 2))
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    with pytest.raises(sfumato.SpecError, match="0 to 3"):
        pipe(labels=[4], seed=1, progress=False)
