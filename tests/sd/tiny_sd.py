"""A tiny random-weight Stable Diffusion 1.x pipeline, written by diffusers, as the reference.

``write_tiny_sd`` writes a ``StableDiffusionPipeline`` with SD 1.x topology at tiny widths (three
cross-attention levels and one plain level, two layers per block; a two-stage KL autoencoder; a
two-layer CLIP text model over the real CLIP vocabulary), saved with ``save_pretrained`` and then
given the files of a Hugging Face SD 1.5 download: ``tokenizer/vocab.json`` + ``merges.txt`` and
SD 1.5's own ``scheduler_config.json``. ``write_single_file`` writes the same weights as an SD 1.x
single file in the original LDM layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusers
import torch
import transformers
from safetensors.torch import load_file, save_file

from sfumato_clip.tokenizer import clip_vocabulary  # tests may import plugins
from sfumato_unet import spec_from_diffusers_config, unet_state_dict_to_ldm
from sfumato_vae import AutoencoderKL
from sfumato_vae.formats import ATTENTION_PROJECTION

UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
)
VAE = dict(
    block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
    sample_size=16,
)
TEXT = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408,
    max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1, hidden_act="quick_gelu",
)
#: runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json, verbatim.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}
#: runwayml/stable-diffusion-v1-5's tokenizer/tokenizer_config.json, simplified.
SD15_TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>", "add_prefix_space": False,
}
#: The image size of the tiny pipeline (U-Net sample_size 8, autoencoder downscale 2).
SIZE = 16


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Move every parameter away from its initialisation (norm weights 1, zero-initialised
    projections, ...), so that a misplaced parameter changes the images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def write_clip_vocabulary(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` as a Hugging Face CLIP download holds them."""
    vocab, merges = clip_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(m) for m in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_pipeline(tokenizer_files: Path) -> diffusers.StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = perturb(diffusers.UNet2DConditionModel(**UNET), seed=1)
    vae = perturb(diffusers.AutoencoderKL(**VAE), seed=2)
    text_encoder = perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**TEXT)), seed=3)
    tokenizer = transformers.CLIPTokenizer(
        str(tokenizer_files / "vocab.json"), str(tokenizer_files / "merges.txt"), model_max_length=77
    )
    scheduler = diffusers.PNDMScheduler.from_config(SD15_SCHEDULER)
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def write_tiny_sd(root: Path) -> Path:
    """The tiny pipeline's diffusers folder, laid out like a Hugging Face SD 1.5 download."""
    vocabulary = root / "vocabulary"
    write_clip_vocabulary(vocabulary)
    folder = root / "pipeline"
    tiny_pipeline(vocabulary).save_pretrained(folder)
    shutil.rmtree(folder / "tokenizer")  # transformers 5 writes tokenizer.json; SD 1.5 ships these:
    shutil.copytree(vocabulary, folder / "tokenizer")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(SD15_TOKENIZER_CONFIG, indent=2))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    return folder


def ldm_state_dict(folder: Path, text: bool = True) -> dict[str, torch.Tensor]:
    """A diffusers SD folder's weights under the key names of an original SD 1.x checkpoint,
    written with the plugins' inverse key maps (checked against diffusers' own converter);
    ``text=False`` leaves out the text encoder (SDXL keeps its own elsewhere)."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    unet = unet_state_dict_to_ldm(
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), spec_from_diffusers_config(unet_config)
    )
    vae_model = AutoencoderKL.from_diffusers(folder / "vae")
    vae_state = vae_model.state_dict()
    vae = {}
    for key, theirs in vae_model.foreign_keys("ldm").items():
        tensor = vae_state[key]
        vae["first_stage_model." + theirs] = tensor[:, :, None, None] if ATTENTION_PROJECTION.match(key) else tensor
    if not text:
        return {**unet, **vae}
    encoder = {"cond_stage_model.transformer." + k: v
               for k, v in load_file(folder / "text_encoder" / "model.safetensors").items()}
    return {**unet, **vae, **encoder}


def write_single_file(folder: Path, path: Path) -> Path:
    """A diffusers SD folder's weights as an SD 1.x single-file ``.safetensors`` checkpoint."""
    save_file({k: v.contiguous() for k, v in ldm_state_dict(folder).items()}, str(path))
    return path


def tiny_architecture_overrides(folder: Path) -> dict[str, object]:
    """What a single file cannot say about the tiny pipeline: its (non-SD-1.5) architecture,
    given as spec overrides on top of the shipped SD 1.x config."""
    text = json.loads((folder / "text_encoder" / "config.json").read_text())
    return {
        "denoiser.block_out_channels": list(UNET["block_out_channels"]), "denoiser.attention_heads": 4,
        "denoiser.cross_attention_dim": 32, "denoiser.norm_num_groups": 8, "denoiser.sample_size": 8,
        "autoencoder.block_out_channels": list(VAE["block_out_channels"]), "autoencoder.layers_per_block": 1,
        "autoencoder.norm_num_groups": 8,
        "text_encoder.architecture": {"embed_dim": None, "text": {
            "width": text["hidden_size"], "layers": text["num_hidden_layers"], "heads": text["num_attention_heads"],
            "mlp_width": text["intermediate_size"],
        }},
        "task.height": SIZE, "task.width": SIZE,
    }

