"""Top-k accuracy and retrieval recall@k on cases with known answers."""

from __future__ import annotations

import pytest
import torch
from sfumato_eval import retrieval_recall, topk_accuracy


def test_topk_accuracy():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    targets = torch.tensor([0, 1, 1])  # right, second-ranked, second-ranked
    result = topk_accuracy(logits, targets, ks=(1, 2, 5))
    assert result == pytest.approx({"top1": 1 / 3, "top2": 1.0, "top5": 1.0})


def test_retrieval_recall_counts_any_caption_of_an_image():
    # 3 images on the axes; 6 captions, two per image. Caption 5 (of image 2) points at image 0.
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.1], [0, 0.1, 1], [1, 0, 0.2]])
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    r = retrieval_recall(images, texts, owner, ks=(1, 2))
    assert r["text_to_image@1"] == pytest.approx(5 / 6)
    assert r["text_to_image@2"] == pytest.approx(1.0)
    # image 2's nearest caption is caption 4 (its own): a hit, though caption 5 is not near it.
    assert r["image_to_text@1"] == pytest.approx(1.0)


def test_retrieval_recall_image_to_text_misses():
    images = torch.tensor([[1.0, 0], [0, 1]])
    texts = torch.tensor([[0, 1.0], [1, 0]])  # each caption describes the other image
    r = retrieval_recall(images, texts, torch.tensor([0, 1]), ks=(1, 10))
    assert r["image_to_text@1"] == 0.0 and r["text_to_image@1"] == 0.0
    assert r["image_to_text@10"] == 1.0 and r["text_to_image@10"] == 1.0  # k is capped at the set size
