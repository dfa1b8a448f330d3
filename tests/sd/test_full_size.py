"""A full-size Stable Diffusion 1.5 single file (random weights, original LDM layout, float16 like
most published files) loads through ``sfumato.load_pipeline`` with the shipped configs alone and
generates."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import sfumato
from sfumato_clip import TextTransformer, resolve_config
from sfumato_clip.conversion import sfumato_to_hf
from sfumato_unet import UNet, unet_config, unet_state_dict_to_ldm
from sfumato_vae import AutoencoderKL, sd1_spec
from sfumato_vae.formats import ATTENTION_PROJECTION


def random_like(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Small random float16 weights; norm scales near 1 so activations stay finite."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, tensor in state.items():
        noise = torch.randn(tensor.shape, generator=g) * 0.02
        out[key] = (noise + 1 if "norm" in key and key.endswith("weight") else noise).half()
    return out


def sd15_ldm_state_dict() -> dict[str, torch.Tensor]:
    """Every tensor of an SD 1.5 checkpoint under its LDM name (plus the extras real files carry)."""
    with torch.device("meta"):  # only names and shapes; the values are drawn below
        unet, vae = UNet(unet_config("sd15")), AutoencoderKL(sd1_spec())
        text_config = resolve_config("ViT-L/14").text
        text = TextTransformer(text_config, None)
    ldm = unet_state_dict_to_ldm(random_like(unet.state_dict(), 0), unet.spec)
    vae_state = random_like(vae.state_dict(), 1)
    for key, theirs in vae.foreign_keys("ldm").items():
        tensor = vae_state[key]
        ldm["first_stage_model." + theirs] = tensor[:, :, None, None] if ATTENTION_PROJECTION.match(key) else tensor
    clip = sfumato_to_hf({"text." + k: v for k, v in random_like(text.state_dict(), 2).items()})
    ldm.update({"cond_stage_model.transformer." + k: v for k, v in clip.items()})
    ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    ldm["model_ema.decay"] = torch.tensor(0.9999)
    return ldm


@pytest.mark.slow
def test_full_size_sd15_single_file_loads_and_generates(tmp_path):
    path = tmp_path / "sd15.safetensors"
    ldm = sd15_ldm_state_dict()
    save_file(ldm, str(path))
    probe = {k: ldm[k].float() for k in ("model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_out.bias")}
    del ldm
    pipe = sfumato.load_pipeline(path)  # strict loading: any missing, unexpected or mis-shaped key raises
    assert torch.equal(pipe.denoiser.conv_out.weight, probe["model.diffusion_model.out.2.weight"])
    assert torch.equal(pipe.autoencoder.decoder.conv_out.bias, probe["first_stage_model.decoder.conv_out.bias"])
    assert sum(p.numel() for p in pipe.denoiser.parameters()) == 859_520_964  # SD 1.5's U-Net
    result = pipe("a red circle above a blue square", steps=2, height=64, width=64, progress=False)
    assert result.images[0].size == (64, 64) and torch.isfinite(result.decoded).all()
