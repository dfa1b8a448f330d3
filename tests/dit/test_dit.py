"""The DiT as a sfumato denoiser: conformance, conditioning, learned sigma, positions, spec
validation, initialisation and the architecture check on loading weights."""

import pytest
import torch
from pydantic import ValidationError

import sfumato
from sfumato.testing import DenoiserConformance
from sfumato_dit import DiT, DiTSpec

TINY = {"type": "dit", "sample_size": 8, "in_channels": 4, "patch_size": 2, "num_layers": 2,
        "num_attention_heads": 2, "attention_head_dim": 8}
CLASSES = {**TINY, "num_classes": 10}
TEXT = {**TINY, "norm_type": "ada_norm_single", "caption_channels": 12, "norm_eps": 1e-6}


class TestClassDiT(DenoiserConformance):
    component_class = DiT
    spec = {**CLASSES, "learned_sigma": True}
    sample_shape = (4, 8, 8)

    def conditioning(self, batch, component):
        return sfumato.Conditioning(labels=torch.arange(batch) + 3)


class TestTextDiT(DenoiserConformance):
    component_class = DiT
    spec = TEXT
    sample_shape = (4, 8, 12)

    def conditioning(self, batch, component):
        g = torch.Generator().manual_seed(2)
        return sfumato.Conditioning(tokens=torch.randn(batch, 5, 12, generator=g), mask=torch.ones(batch, 5, dtype=torch.bool))


class TestUnconditionalLearnedPositionsDiT(DenoiserConformance):
    component_class = DiT
    spec = {**TINY, "in_channels": 3, "positions": "learned"}
    sample_shape = (3, 8, 8)


def build(spec: dict, perturb) -> DiT:
    torch.manual_seed(0)
    return perturb(DiT.from_spec(spec))


def inputs(channels: int = 4, height: int = 8, width: int = 8, batch: int = 2):
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([3.0, 917.5])[:batch]


def test_registered_as_denoiser_type_dit():
    model = sfumato.build("denoiser", TINY)
    assert isinstance(model, DiT) and model.kind == "denoiser"


def test_default_spec_is_dit_s_2():
    with torch.device("meta"):
        model = DiT.from_spec({})
    assert (model.spec.hidden_size, len(model.transformer_blocks), model.spec.patch_size) == (384, 12, 2)


@pytest.mark.parametrize("spec, count", [
    # diffusers' DiT-XL/2 (facebook/DiT-XL-2-256): the paper's 675M plus an embedder copy per block
    ({"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72, "learned_sigma": True,
      "num_classes": 1000}, 749_826_464),
    # PixArt-XL-2-1024-MS: T5-XXL captions, micro-conditions
    ({"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72, "learned_sigma": True,
      "norm_type": "ada_norm_single", "caption_channels": 4096, "sample_size": 128, "micro_conditions": True,
      "interpolation_scale": 2, "norm_eps": 1e-6}, 611_349_152),
], ids=["dit-xl-2", "pixart-xl-2-1024"])
def test_published_configurations_have_diffusers_parameter_counts(spec, count):
    with torch.device("meta"):
        model = DiT.from_spec(spec)
    assert sum(p.numel() for p in model.parameters()) == count


def test_class_attributes_let_generation_check_labels_and_guide():
    model = DiT.from_spec(CLASSES)
    assert (model.num_classes, model.null_label) == (10, 10)
    assert model.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings == 11
    unconditional = DiT.from_spec(TINY)
    assert (unconditional.num_classes, unconditional.null_label) == (None, None)


def test_labels_change_the_prediction_and_the_null_class_is_the_default(perturb):
    model = build(CLASSES, perturb)
    x, t = inputs()
    with torch.no_grad():
        class_3 = model(x, t, sfumato.Conditioning(labels=torch.tensor([3, 3])))
        class_4 = model(x, t, sfumato.Conditioning(labels=torch.tensor([4, 4])))
        null = model(x, t, sfumato.Conditioning(labels=torch.tensor([10, 10])))
        unlabelled = model(x, t, None)
    assert (class_3 - class_4).abs().max() > 1e-3
    assert torch.equal(null, unlabelled)


def test_fractional_timesteps_interpolate(perturb):
    """Flow-matching and continuous samplers call the network between integer timesteps."""
    model = build(CLASSES, perturb)
    x, _ = inputs(batch=1)
    with torch.no_grad():
        at = {t: model(x, torch.tensor([t])) for t in (500.0, 500.25, 501.0)}
    assert not torch.equal(at[500.0], at[500.25]) and not torch.equal(at[500.25], at[501.0])
    assert (at[500.25] - at[500.0]).abs().max() < (at[501.0] - at[500.0]).abs().max()


def test_learned_sigma_returns_the_first_half_of_the_network_output(perturb):
    model = build({**CLASSES, "learned_sigma": True}, perturb)
    assert model.proj_out_2.out_features == 2 * 2 * 8 and model.out_channels == 4
    x, t = inputs()
    captured = {}
    model.proj_out_2.register_forward_hook(lambda m, args, out: captured.update(out=out))
    with torch.no_grad():
        prediction = model(x, t)
    full = captured["out"].reshape(2, 4, 4, 2, 2, 8).permute(0, 5, 1, 3, 2, 4).reshape(2, 8, 8, 8)  # diffusers' unpatchify
    assert prediction.shape == (2, 4, 8, 8)
    assert torch.equal(prediction, full[:, :4])


def test_masked_tokens_are_not_attended_to(perturb):
    model = build(TEXT, perturb)
    x, t = inputs()
    tokens = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    changed = tokens.clone()
    changed[:, 3:] += 10
    with torch.no_grad():
        masked = model(x, t, sfumato.Conditioning(tokens=tokens, mask=mask))
        masked_changed = model(x, t, sfumato.Conditioning(tokens=changed, mask=mask))
        unmasked = model(x, t, sfumato.Conditioning(tokens=tokens))
        first_three = model(x, t, sfumato.Conditioning(tokens=tokens[:, :3]))
    torch.testing.assert_close(masked, masked_changed, rtol=0, atol=1e-6)
    torch.testing.assert_close(masked, first_three, rtol=0, atol=1e-5)
    assert (masked - unmasked).abs().max() > 1e-3


def test_sincos_positions_work_at_other_sizes_and_learned_ones_say_which_size(perturb):
    x, t = inputs(height=12, width=16)
    with torch.no_grad():
        assert build(CLASSES, perturb)(x, t).shape == (2, 4, 12, 16)
    learned = build({**TINY, "positions": "learned"}, perturb)
    assert learned.pos_embed.pos_embed.shape == (1, 16, 16)
    with pytest.raises(sfumato.SpecError, match="learned positions for a 4x4 patch grid.*x_t is 12x16"):
        learned(x, t)


def test_input_conditioning_errors_say_what_to_pass():
    model = DiT.from_spec(TEXT)
    x, t = inputs()
    with pytest.raises(sfumato.SpecError, match=r"cond.tokens \[B, L, 12\]"):
        model(x, t, sfumato.Conditioning())
    with pytest.raises(sfumato.SpecError, match="width 7.*caption_channels"):
        model(x, t, sfumato.Conditioning(tokens=torch.randn(2, 5, 7)))
    with pytest.raises(sfumato.SpecError, match="2x2 patches, but x_t is 9x8"):
        model(torch.randn(2, 4, 9, 8), t, sfumato.Conditioning(tokens=torch.randn(2, 5, 12)))


@pytest.mark.parametrize("fields, message", [
    ({"num_classes": 10, "norm_type": "ada_norm_single"}, "num_classes needs norm_type = 'ada_norm_zero'"),
    ({"cross_attention_dim": 16}, "need norm_type = 'ada_norm_single'"),
    ({"norm_type": "ada_norm_single", "caption_channels": 12, "cross_attention_dim": 8}, "cross_attention_dim must be 16"),
    ({"sample_size": 9}, "sample_size 9 is not a multiple of patch_size 2"),
    ({"attention_head_dim": 3}, "must be a multiple of 4"),
    ({"micro_conditions": True, "norm_type": "ada_norm_single"}, "divisible by 3"),
    ({"positions": "rope"}, "positions"),
])
def test_spec_refuses_architectures_it_cannot_build(fields, message):
    with pytest.raises(ValidationError, match=message):
        DiTSpec.model_validate({**TINY, **fields})


def test_reference_initialisation_predicts_zero_and_trains_from_there():
    """DiT's adaLN-Zero initialisation: zero gates and output layer, so every block starts as the
    identity; the first gradient step moves the output layer."""
    model = DiT.from_spec(CLASSES).train()
    x, t = inputs()
    out = model(x, t, sfumato.Conditioning(labels=torch.tensor([1, 2])))
    assert torch.equal(out, torch.zeros_like(out))
    (out - x).square().mean().backward()
    assert model.proj_out_2.weight.grad.abs().max() > 0
    assert all(torch.equal(b.norm1.linear.weight, torch.zeros_like(b.norm1.linear.weight)) for b in model.transformer_blocks)


def test_saved_weights_record_the_spec_and_a_different_spec_is_refused_by_field(tmp_path, perturb):
    model = build(CLASSES, perturb)
    path = sfumato.save_component(model, tmp_path / "dit.safetensors")
    assert sfumato.read_component_spec(path)["num_classes"] == 10
    with pytest.raises(sfumato.SpecError) as error:
        DiT.from_spec({**CLASSES, "num_attention_heads": 4, "attention_head_dim": 4, "weights": str(path)})
    message = str(error.value)
    assert "num_attention_heads = 4, but the weights were trained with 2" in message
    assert "num_attention_heads = 2, attention_head_dim = 8" in message and "dit.safetensors" in message


def test_gradient_checkpointing_gives_the_same_gradients(perturb):
    x, t = inputs()
    grads = []
    for checkpointing in (False, True):
        model = build({**CLASSES, "gradient_checkpointing": checkpointing}, perturb).train()
        model(x, t).square().mean().backward()
        grads.append(model.pos_embed.proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])
