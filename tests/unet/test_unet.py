"""The U-Net as a sfumato denoiser: conformance, conditioning, spec validation and runtime options."""

import pytest
import torch
from pydantic import ValidationError

import sfumato
from sfumato.testing import DenoiserConformance
from sfumato_unet import UNet, UNetSpec

PIXEL = {"type": "unet", "block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8,
         "attention_head_dim": 8}
TEXT = {**PIXEL, "in_channels": 4, "out_channels": 4, "attention": [True, False], "attention_heads": 2,
        "attention_head_dim": None, "cross_attention_dim": 12}
CLASSES = {**PIXEL, "num_classes": 10, "null_class": True}


class TestPixelUNet(DenoiserConformance):
    component_class = UNet
    spec = PIXEL
    sample_shape = (3, 16, 16)


class TestTextUNet(DenoiserConformance):
    component_class = UNet
    spec = TEXT
    sample_shape = (4, 8, 8)

    def conditioning(self, batch, component):
        return sfumato.Conditioning(tokens=torch.randn(batch, 5, 12, generator=torch.Generator().manual_seed(2)))


class TestClassUNet(DenoiserConformance):
    component_class = UNet
    spec = CLASSES
    sample_shape = (3, 8, 8)

    def conditioning(self, batch, component):
        return sfumato.Conditioning(labels=torch.arange(batch) + 3)


def build(spec: dict) -> UNet:
    torch.manual_seed(0)
    return UNet.from_spec(spec).eval()


def test_registered_as_denoiser_type_unet():
    model = sfumato.build("denoiser", PIXEL)
    assert isinstance(model, UNet) and model.kind == "denoiser"


def test_default_spec_is_a_small_pixel_model():
    model = UNet.from_spec({})
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    assert (model.in_channels, model.out_channels) == (3, 3)


def test_head_width_and_head_count_options():
    assert build(PIXEL).down_blocks[1].attentions[0].heads == 32 // 8
    model = build({**TEXT, "attention_heads": [4, 2], "attention": [True, True]})
    assert model.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 4
    assert model.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 2


def test_labels_change_the_prediction_and_null_class_is_the_default():
    model = build(CLASSES)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([50.0, 50.0])
    with torch.no_grad():
        class_3 = model(x, t, sfumato.Conditioning(labels=torch.tensor([3, 3])))
        class_4 = model(x, t, sfumato.Conditioning(labels=torch.tensor([4, 4])))
        null = model(x, t, sfumato.Conditioning(labels=torch.tensor([10, 10])))
        unlabelled = model(x, t, None)
    assert (class_3 - class_4).abs().max() > 1e-3
    assert torch.equal(null, unlabelled)


def test_missing_conditioning_is_an_error_that_says_what_to_pass():
    with pytest.raises(ValueError, match="labels"):
        build({**CLASSES, "null_class": False})(torch.randn(1, 3, 8, 8), torch.tensor([1.0]))
    text = build(TEXT)
    with pytest.raises(ValueError, match="tokens"):
        text(torch.randn(1, 4, 8, 8), torch.tensor([1.0]), sfumato.Conditioning())
    with pytest.raises(ValueError, match="cross_attention_dim=12"):
        text(torch.randn(1, 4, 8, 8), torch.tensor([1.0]), sfumato.Conditioning(tokens=torch.randn(1, 3, 7)))


def test_tokens_are_attended_to():
    model = build(TEXT)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([10.0])
    with torch.no_grad():
        a = model(x, t, sfumato.Conditioning(tokens=torch.randn(1, 3, 12)))
        b = model(x, t, sfumato.Conditioning(tokens=torch.randn(1, 3, 12)))
    assert (a - b).abs().max() > 1e-3


def test_scalar_timestep_is_broadcast_to_the_batch():
    model = build(PIXEL)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor(7.0)), model(x, torch.tensor([7.0, 7.0])))


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 600.0])
    cond = sfumato.Conditioning(tokens=torch.randn(2, 3, 12))
    grads = []
    for checkpointing in (False, True):
        model = build({**TEXT, "gradient_checkpointing": checkpointing}).train()
        model(x, t, cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_channels_last_gives_the_same_output():
    model = build(TEXT)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 600.0]), sfumato.Conditioning(tokens=torch.randn(2, 3, 12))
    with torch.no_grad():
        expected = model(x, t, cond)
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t, cond)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_saved_weights_record_the_spec(tmp_path):
    model = build(TEXT)
    path = sfumato.save_component(model, tmp_path / "unet.safetensors")
    recorded = sfumato.read_component_spec(path)
    assert UNetSpec.model_validate(recorded) == model.spec
    rebuilt = UNet.from_spec({**recorded, "weights": str(path)})
    assert torch.equal(rebuilt.conv_in.weight, model.conv_in.weight)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"attention": [True]}, "one per level"),
        ({"attention_heads": 2}, "not both"),
        ({"block_out_channels": [16, 36]}, "norm_num_groups"),
        ({"null_class": True}, "needs num_classes"),
    ],
)
def test_inconsistent_specs_are_rejected(fields, message):
    with pytest.raises(ValidationError, match=message):
        UNetSpec.model_validate({**PIXEL, **fields})
