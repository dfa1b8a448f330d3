"""Contrastive losses: values on cases with known answers, clamping, and detached soft targets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sfumato_clip import clip_loss
from sfumato_recipes.contrastive import siglip_loss, soft_target_loss


def test_clip_loss_is_log_batch_for_uninformative_embeddings():
    same = torch.ones(4, 8)
    loss = clip_loss(same, same, torch.tensor(math.log(1 / 0.07)))
    assert abs(loss.item() - math.log(4)) < 1e-5


def test_clip_loss_is_near_zero_for_perfectly_matched_pairs():
    embeds = torch.eye(4, 8)
    assert clip_loss(embeds, embeds, torch.tensor(math.log(100.0))).item() < 1e-10


def test_clip_loss_scale_is_clamped_at_100():
    torch.manual_seed(0)
    images, texts = torch.randn(5, 8), torch.randn(5, 8)
    at_100 = clip_loss(images, texts, torch.tensor(math.log(100.0)))
    scale = torch.tensor(math.log(1000.0), requires_grad=True)
    above = clip_loss(images, texts, scale)
    assert torch.allclose(above, at_100)
    above.backward()
    assert scale.grad.item() == 0.0


def test_clip_loss_is_symmetric_cross_entropy():
    torch.manual_seed(0)
    images, texts = torch.randn(3, 8), torch.randn(3, 8)
    logits = 10 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    expected = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    assert torch.allclose(clip_loss(images, texts, torch.tensor(math.log(10.0))), expected, atol=1e-6)


def test_siglip_loss_matches_its_formula():
    torch.manual_seed(0)
    images, texts = torch.randn(3, 8), torch.randn(3, 8)
    cos = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    logits = 10 * cos - 10
    expected = -(F.logsigmoid(logits.diag()).sum() + F.logsigmoid(-logits).sum() - F.logsigmoid(-logits.diag()).sum()) / 3
    loss = siglip_loss(images, texts, torch.tensor(10.0), torch.tensor(-10.0))  # t = 10, b = -10
    assert torch.allclose(loss, expected, atol=1e-5)


def _reference_soft_target_loss(images, texts, detach: bool):
    """The Flickr8k reference (its targets carry gradients unless ``detach``)."""
    logits = texts @ images.T
    targets = F.softmax((images @ images.T + texts @ texts.T) / 2, dim=-1)
    targets = targets.detach() if detach else targets
    loss = (F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(logits.T, targets.T, reduction="none")) / 2
    return loss.mean()


def test_soft_target_loss_value_matches_reference_and_targets_carry_no_gradient():
    torch.manual_seed(0)
    images = torch.randn(4, 6, requires_grad=True)
    texts = torch.randn(4, 6, requires_grad=True)
    ours = soft_target_loss(images, texts)
    ours_grad = torch.autograd.grad(ours, images)[0]
    for detach in (True, False):
        ref = _reference_soft_target_loss(images, texts, detach)
        assert torch.allclose(ours, ref, atol=1e-6)  # same value either way
        ref_grad = torch.autograd.grad(ref, images)[0]
        assert torch.allclose(ours_grad, ref_grad, atol=1e-6) == detach
