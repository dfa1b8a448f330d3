"""A tiny random-weight Stable Diffusion XL pipeline, written by diffusers, as the reference.

``write_tiny_sdxl`` writes a ``StableDiffusionXLPipeline`` with SDXL's topology at tiny widths: a
U-Net whose first level has no attention and whose levels have 1 and 2 transformer blocks, linear
projections and the ``text_time`` added embedding (pooled text + six size ids); two CLIP text
encoders over the real CLIP vocabulary, the second with a projection (``CLIPTextModelWithProjection``)
and its tokenizer padding with ``"!"`` as SDXL's ``tokenizer_2`` does; a two-stage KL autoencoder
with SDXL's scaling factor; SDXL's own ``scheduler_config.json``. The configs follow diffusers' own
SDXL pipeline tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusers
import torch
import transformers

from sd.tiny_sd import VAE, perturb, write_clip_vocabulary

UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
    cross_attention_dim=64, norm_num_groups=8,
)  # 80 = 32 (text_embeds) + 6 * 8 (time ids); 64 = 32 + 32 (the two encoders' widths)
TEXT = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, vocab_size=49408,
    max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1, hidden_act="gelu",
    projection_dim=32,
)
#: stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json, verbatim.
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
}
#: The tokenizer configs of SDXL base (simplified): tokenizer pads with the end token, tokenizer_2 with "!".
TOKENIZER_CONFIGS = {
    "tokenizer": {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                  "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>"},
    "tokenizer_2": {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
                    "unk_token": "<|endoftext|>"},
}
#: The image size of the tiny pipeline (U-Net sample_size 8, autoencoder downscale 2).
SIZE = 16


def tiny_pipeline(vocabulary: Path) -> diffusers.StableDiffusionXLPipeline:
    torch.manual_seed(0)
    unet = perturb(diffusers.UNet2DConditionModel(**UNET), seed=11)
    vae = perturb(diffusers.AutoencoderKL(**VAE, scaling_factor=0.13025), seed=12)
    text_encoder = perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**TEXT)), seed=13)
    text_encoder_2 = perturb(transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TEXT)), seed=14)
    tokenizers = [transformers.CLIPTokenizer(str(vocabulary / "vocab.json"), str(vocabulary / "merges.txt"),
                                             model_max_length=77, pad_token=pad) for pad in ("<|endoftext|>", "!")]
    scheduler = diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    return diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1], unet=unet, scheduler=scheduler,
    )


def write_tiny_sdxl(root: Path) -> Path:
    """The tiny pipeline's diffusers folder, laid out like a Hugging Face SDXL download."""
    vocabulary = root / "vocabulary"
    write_clip_vocabulary(vocabulary)
    folder = root / "pipeline"
    tiny_pipeline(vocabulary).save_pretrained(folder)
    for name, config in TOKENIZER_CONFIGS.items():
        shutil.rmtree(folder / name)  # transformers 5 writes tokenizer.json; SDXL ships these:
        shutil.copytree(vocabulary, folder / name)
        (folder / name / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SDXL_SCHEDULER, indent=2))
    return folder


# -- the same weights as an SDXL single file (Stability's SGM key layout) ------------------------

#: transformers CLIPTextModel (WithProjection) name -> open_clip name, for the second text encoder:
#: the inverse of diffusers' own map (``single_file_utils.DIFFUSERS_TO_LDM_MAPPING["openclip"]``).
def open_clip_text_state(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    mapping = DIFFUSERS_TO_LDM_MAPPING["openclip"]
    out = {}
    for theirs, ours in mapping["layers"].items():  # embeddings, final norm, projection
        if theirs in hf:
            out[ours] = hf[theirs].T.contiguous() if ours == "text_projection" else hf[theirs]
    renames = {k: v for k, v in mapping["transformer"].items() if not k.startswith("transformer.")}
    layers = {k for k in hf if k.startswith("text_model.encoder.layers.")}
    for key in sorted(layers):
        name = "transformer." + key
        for theirs, ours in renames.items():
            name = name.replace(theirs, ours)
        for part in ("weight", "bias"):
            if key.endswith(f"self_attn.q_proj.{part}"):
                stem = key[: -len(f"q_proj.{part}")]
                out[name.replace(f"q_proj.{part}", f"in_proj_{part}")] = torch.cat(
                    [hf[f"{stem}{p}_proj.{part}"] for p in "qkv"])
        if not any(f"{p}_proj." in key for p in "qkv"):
            out[name] = hf[key]
    return out


def with_text_model(key: str) -> str:
    """A transformers CLIP text key as transformers 4 (and so every SD single file) wrote it,
    under ``text_model.``; transformers 5 saves a ``CLIPTextModel`` without that prefix."""
    return key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key


def sgm_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """A diffusers SDXL folder's weights under the key names of an SDXL single file: the U-Net and
    VAE with the plugins' inverse LDM key maps (the U-Net's checked against diffusers' converter
    in the tests), the first text encoder as transformers keys, the second in open_clip's layout."""
    from safetensors.torch import load_file
    from sfumato_unet import spec_from_diffusers_config, unet_state_dict_to_ldm

    from sd.tiny_sd import ldm_state_dict

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    unet = unet_state_dict_to_ldm(
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), spec_from_diffusers_config(unet_config)
    )
    vae = {k: v for k, v in ldm_state_dict(folder, text=False).items() if k.startswith("first_stage_model.")}
    text = {"conditioner.embedders.0.transformer." + with_text_model(k): v
            for k, v in load_file(folder / "text_encoder" / "model.safetensors").items()}
    hf_2 = {with_text_model(k): v for k, v in load_file(folder / "text_encoder_2" / "model.safetensors").items()}
    text_2 = {"conditioner.embedders.1.model." + k: v for k, v in open_clip_text_state(hf_2).items()}
    return {**unet, **vae, **text, **text_2}


def write_single_file(folder: Path, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sgm_state_dict(folder).items()}, str(path))
    return path


def tiny_architecture_overrides(folder: Path) -> dict[str, object]:
    """What a single file cannot say about the tiny pipeline: its (non-SDXL-base) architecture and
    tokenizers, as spec overrides on top of the shipped SDXL config."""
    text = {"width": TEXT["hidden_size"], "layers": TEXT["num_hidden_layers"], "heads": TEXT["num_attention_heads"],
            "mlp_width": TEXT["intermediate_size"], "activation": "gelu"}
    return {
        "denoiser.block_out_channels": list(UNET["block_out_channels"]), "denoiser.attention": [False, True],
        "denoiser.attention_heads": list(UNET["attention_head_dim"]),
        "denoiser.transformer_layers": list(UNET["transformer_layers_per_block"]),
        "denoiser.cross_attention_dim": UNET["cross_attention_dim"], "denoiser.norm_num_groups": 8,
        "denoiser.sample_size": 8, "denoiser.addition_time_embed_dim": UNET["addition_time_embed_dim"],
        "denoiser.projection_class_embeddings_input_dim": UNET["projection_class_embeddings_input_dim"],
        "autoencoder.block_out_channels": list(VAE["block_out_channels"]), "autoencoder.layers_per_block": 1,
        "autoencoder.norm_num_groups": 8,
        "text_encoder.architecture": {"embed_dim": 0, "text": text},
        "text_encoder_2.architecture": {"embed_dim": TEXT["projection_dim"], "text": text},
        "text_encoder.tokenizer": str(folder / "tokenizer"), "text_encoder_2.tokenizer": str(folder / "tokenizer_2"),
        "task.height": SIZE, "task.width": SIZE,
    }
