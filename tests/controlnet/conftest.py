"""Fixtures of the ControlNet tests: the tiny SD 1.x folder and two tiny ControlNets for it."""

from __future__ import annotations

from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers")

from sd.tiny_sd import perturb, write_tiny_sd  # noqa: E402


def write_controlnet(unet_folder: Path, folder: Path, seed: int) -> Path:
    """A ControlNet made from the tiny U-Net as diffusers makes one (``ControlNetModel.from_unet``),
    with a control-image embedding down to the tiny autoencoder's latent size (one stride-2 stage),
    every parameter moved off its initialisation (its zero convolutions included)."""
    unet = diffusers.UNet2DConditionModel.from_pretrained(unet_folder)
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    perturb(controlnet, seed=seed, scale=0.1).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_controlnets(tiny_sd, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("tiny-controlnets")
    return [write_controlnet(tiny_sd / "unet", root / f"controlnet-{i}", seed=20 + i) for i in range(2)]


def ldm_controlnet_state(folder: Path) -> dict:
    """A diffusers ControlNet folder's weights in the original ``cldm`` layout (``control_model.*``):
    the encoder half through the unet plugin's inverse LDM key map, the rest by the layout's names
    (the tests check the result with diffusers' own converter)."""
    import json

    from safetensors.torch import load_file
    from sfumato_unet import UNetSpec, unet_state_dict_to_ldm

    config = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    own = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
    encoder = {k: v for k, v in state.items() if not k.startswith(own)}
    spec = UNetSpec(in_channels=4, out_channels=4, block_out_channels=config["block_out_channels"],
                    layers_per_block=config["layers_per_block"], cross_attention_dim=config["cross_attention_dim"],
                    attention=[b == "CrossAttnDownBlock2D" for b in config["down_block_types"]],
                    attention_heads=config["attention_head_dim"], norm_num_groups=config["norm_num_groups"])
    out = {"control_model." + k[len("model.diffusion_model."):]: v for k, v in unet_state_dict_to_ldm(encoder, spec).items()}
    embedding = len(config["conditioning_embedding_out_channels"])
    for key, value in state.items():
        if key.startswith("controlnet_cond_embedding.conv_in."):
            out["control_model.input_hint_block.0." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            out[f"control_model.input_hint_block.{2 * (2 * (embedding - 1) + 1)}." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("controlnet_cond_embedding.blocks."):
            k, part = key.split(".")[2], key.rsplit(".", 1)[1]
            out[f"control_model.input_hint_block.{2 * (int(k) + 1)}.{part}"] = value
        elif key.startswith("controlnet_down_blocks."):
            i, part = key.split(".")[1], key.rsplit(".", 1)[1]
            out[f"control_model.zero_convs.{i}.0.{part}"] = value
        elif key.startswith("controlnet_mid_block."):
            out["control_model.middle_block_out.0." + key.rsplit(".", 1)[1]] = value
    return out


@pytest.fixture(scope="session")
def tiny_controlnet_file(tiny_controlnets, tmp_path_factory) -> Path:
    """The first tiny ControlNet as a single file in the original ``control_model.*`` layout."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("tiny-controlnet-file") / "control_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_controlnet_state(tiny_controlnets[0]).items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_sdxl_with_controlnet(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny SDXL folder (``sdxl.tiny_sdxl``) and a ControlNet made from its U-Net (an SDXL
    ControlNet: it has the ``text_time`` added embedding too)."""
    from sdxl.tiny_sdxl import write_tiny_sdxl

    root = tmp_path_factory.mktemp("tiny-sdxl-controlnet")
    folder = write_tiny_sdxl(root)
    return folder, write_controlnet(folder / "unet", root / "controlnet", seed=30)
