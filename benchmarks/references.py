"""The reference models, built by diffusers and transformers from a fixed seed and saved in their
own formats; sfumato loads the same files through its converters.

Two sizes: ``full`` is what the suite measures (small enough for a 2-core CPU, with the topology
of the real models), ``tiny`` is what the harness's own tests run. Weights are random, moved away
from their initialisation (zero-initialised projections would skip work in neither library, but
would hide a misplaced weight in the output check).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from sfumato_clip.tokenizer import clip_vocabulary

#: U-Net of a small pixel-space, class-conditional model (a built-in-sized digits/shapes model).
UNET_PIXEL = {
    "full": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=32, norm_num_groups=32, num_class_embeds=11,
    ),
    "tiny": dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=4, num_class_embeds=11,
    ),
}
#: Stable Diffusion 1.x U-Net topology (three cross-attention levels and a plain one, two layers
#: per block, 8 heads) at small widths.
UNET_SD = {
    "full": dict(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32,
    ),
    "tiny": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    ),
}
#: SD 1.x's KL autoencoder topology (downscale 8) at small widths.
VAE = {
    "full": dict(
        block_out_channels=(32, 64, 64, 64), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        sample_size=256,
    ),
    "tiny": dict(
        block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=16,
    ),
}
#: A small CLIP (both towers) in transformers' layout.
CLIP = {
    "full": dict(
        text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                  max_position_embeddings=77, hidden_act="quick_gelu"),
        vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                    image_size=128, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=128,
    ),
    "tiny": dict(
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=77, hidden_act="quick_gelu"),
        vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    image_size=16, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=8,
    ),
}
#: The text encoder of the text-to-image pipeline (SD 1.x's CLIP text model, small).
SD_TEXT = {
    "full": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 max_position_embeddings=77, hidden_act="quick_gelu"),
    "tiny": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=77, hidden_act="quick_gelu"),
}
#: The text-to-image pipeline's U-Net: unet-sd's, cross-attending to the text model's states.
SD_UNET = {size: dict(UNET_SD[size], cross_attention_dim=SD_TEXT[size]["hidden_size"]) for size in UNET_SD}
#: The text-to-image pipeline's autoencoder: two stages (downscale 2), so 32x32 latents are 64x64 images.
SD_VAE = {
    "full": dict(VAE["full"], block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64),
    "tiny": VAE["tiny"],
}
#: The Stable Diffusion 1.5 architecture at full size (the GPU suite): runwayml/stable-diffusion-v1-5's
#: unet, vae and text_encoder configs. ``tiny`` is the same topology at test size.
SD15 = {
    "sd15": dict(
        unet=dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                  layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                  attention_head_dim=8, norm_num_groups=32),
        vae=dict(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
                 layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, hidden_act="quick_gelu"),
    ),
    "tiny": dict(unet=UNET_SD["tiny"] | {"cross_attention_dim": 16}, vae=VAE["tiny"], text=SD_TEXT["tiny"]),
}
CLIP_TOKENS = dict(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
#: runwayml/stable-diffusion-v1-5's scheduler config, as DDIM.
SD15_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False,
}
SD15_TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def perturbed(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Every parameter moved away from its initialisation by seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def cached(folder: Path, write: Callable[[Path], Any]) -> Path:
    """``folder``, written by ``write`` the first time (workers of one run share it)."""
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write(folder)
        (folder / ".complete").touch()
    return folder


def unet_folder(root: Path, name: str, config: dict[str, Any]) -> Path:
    import diffusers

    def write(folder: Path) -> None:
        cls = diffusers.UNet2DConditionModel if "cross_attention_dim" in config else diffusers.UNet2DModel
        torch.manual_seed(0)
        perturbed(cls(**config), seed=1).save_pretrained(folder)

    return cached(root / name, write)


def vae_folder(root: Path, name: str, config: dict[str, Any]) -> Path:
    import diffusers

    def write(folder: Path) -> None:
        torch.manual_seed(0)
        perturbed(diffusers.AutoencoderKL(**config), seed=2).save_pretrained(folder)

    return cached(root / name, write)


def clip_folder(root: Path, name: str, config: dict[str, Any]) -> Path:
    import transformers

    def write(folder: Path) -> None:
        torch.manual_seed(0)
        hf_config = transformers.CLIPConfig(
            text_config={**config["text"], **CLIP_TOKENS}, vision_config=config["vision"],
            projection_dim=config["projection_dim"],
        )
        perturbed(transformers.CLIPModel(hf_config), seed=3).save_pretrained(folder)

    return cached(root / name, write)


def write_tokenizer_files(folder: Path) -> None:
    """``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` as an SD 1.5 download has them."""
    vocab, merges = clip_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *(" ".join(m) for m in merges)]) + "\n",
                                       encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(SD15_TOKENIZER_CONFIG), encoding="utf-8")


def sd_folder(root: Path, size: str) -> Path:
    """A ``StableDiffusionPipeline`` folder with the SD topology U-Net, a two-stage VAE and a small
    CLIP text model, laid out like a Hugging Face SD 1.5 download."""
    return pipeline_folder(root / f"sd-{size}", SD_UNET[size], SD_VAE[size], SD_TEXT[size])


def sd15_folder(root: Path, size: str = "sd15") -> Path:
    """The same, with the Stable Diffusion 1.5 architecture (``SD15[size]``)."""
    return pipeline_folder(root / f"sd15-{size}", **SD15[size])


def pipeline_folder(root: Path, unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any]) -> Path:
    """``root/pipeline``: a ``StableDiffusionPipeline`` of these component configs, written once."""
    import diffusers
    import transformers

    def write(folder: Path) -> None:
        write_tokenizer_files(folder / "tokenizer")
        torch.manual_seed(0)
        pipe = diffusers.StableDiffusionPipeline(
            unet=perturbed(diffusers.UNet2DConditionModel(**unet), seed=1),
            vae=perturbed(diffusers.AutoencoderKL(**vae), seed=2),
            text_encoder=perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(**text, **CLIP_TOKENS)),
                                   seed=3),
            tokenizer=transformers.CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"),
                                                 str(folder / "tokenizer" / "merges.txt")),
            scheduler=diffusers.DDIMScheduler.from_config(SD15_SCHEDULER),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(folder / "pipeline")
        shutil.rmtree(folder / "pipeline" / "tokenizer")  # transformers 5 writes tokenizer.json only
        shutil.copytree(folder / "tokenizer", folder / "pipeline" / "tokenizer")
        (folder / "pipeline" / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))

    return cached(root, write) / "pipeline"
