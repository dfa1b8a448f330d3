"""What sfumato_sd makes of a checkpoint: the spec of an SD 1.x folder or single file, and a
``SpecError`` naming the problem for everything that is almost, but not, SD 1.x."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import pytest
import torch
from safetensors.torch import save_file

import sfumato
import sfumato_sd

pytest.importorskip("diffusers")

from sd.tiny_sd import SD15_SCHEDULER, SIZE  # noqa: E402


def error_of(path, **kwargs) -> str:
    with pytest.raises(sfumato.SpecError) as info:
        sfumato.load_pipeline(path, **kwargs)
    return str(info.value)


def copy_configs_link_weights(source: str, target: str) -> None:
    if source.endswith(".safetensors"):
        os.symlink(source, target)
    else:
        shutil.copy(source, target)


@pytest.fixture
def folder_copy(tiny_sd, tmp_path):
    """A copy of the tiny folder's configs (weights linked) that a test may break."""
    return shutil.copytree(tiny_sd, tmp_path / "pipeline", copy_function=copy_configs_link_weights)


def edit_json(path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_folder_spec_is_sd1_with_the_folders_own_configs(tiny_sd):
    spec = sfumato_sd.spec_from_diffusers_folder(tiny_sd)
    assert spec["task"] == {"type": "text-to-image", "height": SIZE, "width": SIZE}
    assert spec["denoiser"]["block_out_channels"] == [16, 16, 32, 32]
    assert spec["denoiser"]["attention"] == [True, True, True, False]
    assert spec["denoiser"]["weights"] == str(tiny_sd / "unet")
    assert spec["autoencoder"]["scaling_factor"] == 0.18215
    assert spec["text_encoder"]["tokenizer"] == str(tiny_sd / "tokenizer")
    assert spec["diffusion"] == {"timesteps": 1000, "betas": "scaled_linear", "beta_start": 0.00085,
                                 "beta_end": 0.012, "prediction": "epsilon", "zero_terminal_snr": False}
    # SD 1.5's PNDM config samples with sfumato's PLMS (pndm, skip_prk_steps) on the same timesteps
    assert spec["scheduler"] == {"type": "pndm", "set_alpha_to_one": False, "lower_order_final": False,
                                 "steps_offset": 1, "skip_prk_steps": True, "steps": 50}
    assert spec["guidance"] == [{"type": "cfg", "scale": 7.5}]


def test_single_file_spec_is_the_shipped_sd1_config(tiny_sd_file):
    spec = sfumato_sd.spec_from_single_file(tiny_sd_file)
    assert spec["denoiser"]["block_out_channels"] == [320, 640, 1280, 1280]
    assert spec["denoiser"]["cross_attention_dim"] == 768 and spec["autoencoder"]["scaling_factor"] == 0.18215
    assert {spec[t]["weights"] for t in ("denoiser", "autoencoder", "text_encoder")} == {str(tiny_sd_file)}
    assert spec["text_encoder"]["tokenizer"] == "builtin:clip"
    assert spec["scheduler"]["steps_offset"] == 1 and spec["task"]["height"] == 512


def test_tokenizer_json_folder_gives_the_same_ids_as_vocab_and_merges(tiny_sd, tmp_path):
    from transformers import CLIPTokenizer

    CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer").save_pretrained(tmp_path)  # writes tokenizer.json
    assert (tmp_path / "tokenizer.json").is_file() and not (tmp_path / "vocab.json").exists()
    prompts = ["a red circle above a blue square", "", "Émile's café, 3 dogs!"]
    vocab_merges = sfumato.load_pipeline(tiny_sd).text_encoder.tokenizer(prompts).input_ids
    from_json = sfumato.load_pipeline(tiny_sd, {"text_encoder.tokenizer": str(tmp_path)}).text_encoder.tokenizer(prompts)
    assert torch.equal(from_json.input_ids, vocab_merges)
    reference = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")(prompts, padding="max_length", max_length=77)
    assert vocab_merges.tolist() == reference.input_ids


def test_an_sd1_folder_labelled_sdxl_is_read_as_sdxl_and_lists_what_it_lacks(folder_copy):
    edit_json(folder_copy / "model_index.json", _class_name="StableDiffusionXLPipeline")
    text = error_of(folder_copy)
    assert "text_encoder_2 is [None, None]; a StableDiffusionXLPipeline (SDXL) has" in text
    assert "sub-folder text_encoder_2/ is missing" in text and "sub-folder tokenizer_2/ is missing" in text


@pytest.mark.parametrize("class_name, message", [
    ("StableDiffusionUpscalePipeline", "not a text-to-image SD 1.x pipeline"),
])
def test_other_pipeline_classes_are_named(folder_copy, class_name, message):
    edit_json(folder_copy / "model_index.json", _class_name=class_name)
    text = error_of(folder_copy)
    assert class_name in text and message in text and "StableDiffusionPipeline" in text


def test_sd2_unet_is_named(folder_copy):
    edit_json(folder_copy / "unet" / "config.json", use_linear_projection=True, cross_attention_dim=1024)
    assert "Stable Diffusion 2.x" in error_of(folder_copy)


def test_image_conditioned_unet_is_named(folder_copy):
    """9 input channels is SD's inpainting U-Net, which loads; other counts are named."""
    edit_json(folder_copy / "unet" / "config.json", in_channels=8)
    assert "in_channels is 8" in error_of(folder_copy)


def test_missing_sub_folders_and_files_are_all_listed(folder_copy):
    shutil.rmtree(folder_copy / "vae")
    (folder_copy / "tokenizer" / "merges.txt").unlink()
    (folder_copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder_copy / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"")
    text = error_of(folder_copy)
    assert "sub-folder vae/ is missing" in text and "tokenizer/merges.txt is missing" in text
    assert "unet/diffusion_pytorch_model.safetensors is missing" in text and "pickle" in text


def test_single_files_of_other_families_are_named(tmp_path):
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}
    save_file({**unet, "conditioner.embedders.0.x": torch.zeros(1)}, tmp_path / "xl.safetensors")
    text = error_of(tmp_path / "xl.safetensors")  # read as SDXL: what it lacks is listed
    assert "no conditioner.embedders.1.model.* keys" in text and "no first_stage_model.* keys" in text
    save_file({**unet, "cond_stage_model.model.x": torch.zeros(1)}, tmp_path / "v2.safetensors")
    assert "Stable Diffusion 2.x" in error_of(tmp_path / "v2.safetensors")
    inpaint = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}
    save_file(inpaint, tmp_path / "inpaint.safetensors")
    text = error_of(tmp_path / "inpaint.safetensors")
    assert "9 input channels" in text and "first_stage_model" in text and "cond_stage_model.transformer" in text


def test_unknown_files_say_what_is_supported(tmp_path):
    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "other.safetensors", tmp_path / "notes.txt", tmp_path / "empty"):
        text = error_of(path)
        assert "no plugin recognises it" in text and "model_index.json" in text and ".safetensors" in text
    (tmp_path / "sd.ckpt").write_bytes(b"")
    assert "pickle" in error_of(tmp_path / "sd.ckpt")


@pytest.mark.parametrize("config, expected", [
    ({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing", "use_karras_sigmas": True},
     {"type": "euler", "spacing": "trailing", "sigmas": "karras"}),
    ({"_class_name": "HeunDiscreteScheduler", "use_beta_sigmas": True}, {"type": "heun", "sigmas": "beta"}),
    ({"_class_name": "DDIMScheduler"}, {"type": "ddim", "thresholding": "clip", "clip_sample_range": 1.0,
                                        "set_alpha_to_one": True}),
    ({"_class_name": "DPMSolverMultistepScheduler", "steps_offset": 1, "timestep_spacing": "leading"},
     {"type": "dpmpp-2m", "spacing": "leading", "steps_offset": 1}),
    ({"_class_name": "DDPMScheduler", "variance_type": "fixed_large", "thresholding": True},
     {"type": "ddpm", "variance": "fixed_large", "thresholding": "dynamic", "dynamic_thresholding_ratio": 0.995,
      "sample_max_value": 1.0}),
])
def test_scheduler_configs_map_to_the_same_sampler(config, expected):
    assert sfumato_sd.scheduler_table(config, "scheduler_config.json") == expected


def test_scheduler_settings_without_an_equivalent_are_named_in_a_warning():
    config = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver", "solver_order": 1}
    with pytest.warns(UserWarning, match="algorithm_type 'dpmsolver'"):
        assert sfumato_sd.scheduler_table(config, "s.json")["type"] == "dpmpp-2m"
    with pytest.warns(UserWarning, match="FlowMatchEulerDiscreteScheduler"):
        assert sfumato_sd.scheduler_table({"_class_name": "FlowMatchEulerDiscreteScheduler"}, "s.json")["type"] == "ddim"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sfumato_sd.scheduler_table(SD15_SCHEDULER, "s.json")  # SD 1.5's own config: nothing lost


def test_training_schedules_map_and_unsupported_ones_are_errors():
    table = sfumato_sd.diffusion_table(
        {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}, "s")
    assert table == {"timesteps": 1000, "betas": "cosine", "beta_start": 0.0001, "beta_end": 0.02,
                     "prediction": "v", "zero_terminal_snr": True}
    with pytest.raises(sfumato.SpecError, match="trained_betas.*\n.*beta_schedule 'sigmoid'"):
        sfumato_sd.diffusion_table({"trained_betas": [0.1], "beta_schedule": "sigmoid"}, "s")
