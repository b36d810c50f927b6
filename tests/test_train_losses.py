"""Loss building blocks: confidence masking, CutMix consistency, dense CLIP guidance masking, loss weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semivl_edge.train import augment, losses
from semivl_edge.train.guidance import DenseClipGuidance, class_scores, guidance_targets


def test_pseudo_labels_are_masked_by_the_confidence_threshold():
    # Two classes, 1x4 pixels; softmax confidences 0.5, ~0.88, ~0.96, ~0.99.
    margins = torch.tensor([0.0, 2.0, 3.2, 5.0])
    teacher = torch.stack([margins, torch.zeros(4)]).view(1, 2, 1, 4)
    confidence, label = losses.pseudo_labels(teacher)
    assert label.tolist() == [[[0, 0, 0, 0]]]
    assert torch.allclose(confidence, torch.sigmoid(margins).view(1, 1, 4))

    student = torch.randn(1, 2, 1, 4, requires_grad=True)
    ignore = torch.tensor([[[0, 0, 0, 255]]])  # the last pixel is padding
    loss = losses.confident_consistency_loss(student, label, confidence, ignore, threshold=0.95)
    per_pixel = F.cross_entropy(student, label, reduction="none")
    expected = per_pixel[0, 0, 2] / 3  # only pixel 2 is confident and not padding; 3 valid pixels
    assert torch.allclose(loss, expected)
    loss.backward()
    assert student.grad[..., [0, 1, 3]].abs().sum() == 0  # unconfident and padded pixels give no gradient

    nothing = losses.confident_consistency_loss(student, label, confidence, ignore, threshold=0.999)
    assert nothing.item() == 0.0


def test_supervised_loss_ignores_255_and_survives_an_empty_mask():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, :2] = 255
    assert torch.allclose(losses.supervised_loss(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    assert losses.supervised_loss(logits, torch.full_like(target, 255)).item() == 0.0


def test_loss_combination_weights():
    one = torch.tensor(1.0)
    sup, s1, s2, fp = torch.tensor(2.0), torch.tensor(4.0), torch.tensor(8.0), torch.tensor(16.0)
    assert losses.combine_losses(sup, s1, s2, fp).item() == pytest.approx((2 + 1 + 2 + 8) / 2)
    total = losses.combine_losses(sup, s1, s2, fp, one * 4, one * 8, one * 2, guidance_weight=0.1)
    assert total.item() == pytest.approx((2 + 1 + 2 + 8) / 2 + 0.1 * (1 + 2 + 1))


def test_cutmix_moves_image_and_labels_with_the_same_box():
    generator = torch.Generator().manual_seed(3)
    size = 32
    boxes = torch.stack([augment.sample_cutmix_box(size, 1.0, generator) for _ in range(4)])
    base_img, partner_img = torch.zeros(4, 3, size, size), torch.ones(4, 3, size, size)
    base_lbl, partner_lbl = torch.full((4, size, size), 1), torch.full((4, size, size), 7)
    base_conf, partner_conf = torch.full((4, size, size), 0.2), torch.full((4, size, size), 0.99)
    image = augment.cutmix(base_img, partner_img, boxes)
    label = augment.cutmix(base_lbl, partner_lbl, boxes)
    conf = augment.cutmix(base_conf, partner_conf, boxes)
    inside = boxes.bool()
    for channel in range(3):
        assert torch.equal(image[:, channel] == 1, inside)
    assert torch.equal(label == 7, inside) and torch.equal(conf == 0.99, inside)
    assert inside.any(dim=(1, 2)).all()  # p = 1: every sample gets a box


def test_cutmix_box_statistics():
    generator = torch.Generator().manual_seed(0)
    size = 100
    no_box = 0
    for _ in range(400):
        box = augment.sample_cutmix_box(size, 0.5, generator)
        if not box.any():
            no_box += 1
            continue
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        height, width = len(rows), len(cols)
        assert box.sum() == height * width  # one rectangle
        assert 0.015 <= height * width / size**2 <= 0.41
        assert 0.25 <= height / width <= 1 / 0.25
    assert 150 <= no_box <= 250  # applied with p = 0.5


def test_guidance_takes_the_best_concept_per_class_and_masks_by_zeta():
    # 3 classes, 4 concepts (class 1 owns two); 2-d embeddings, a 1x3 feature map.
    concepts = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]]), dim=-1)
    owners = torch.tensor([0, 1, 1, 2])
    dense = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.7, 0.7]]), dim=-1).T.reshape(1, 2, 1, 3)
    scores = class_scores(dense, concepts, owners, 3)
    assert scores.shape == (1, 3, 1, 3)
    assert torch.allclose(scores[0, 1, 0, 1], torch.tensor(1.0))  # concept 2 matches exactly, max over concepts
    label, conf = guidance_targets(scores, (1, 3), temperature=100.0, zeta=0.9)
    probs = (100 * scores).softmax(1)
    assert torch.allclose(conf, probs.max(1).values)
    assert label[0, 0, 0] == 0 and label[0, 0, 1] == 1
    # Pixel 2 lies between class 0 (cos 0.707) and class 1 (cos ~0.99): confident for class 1.
    assert label[0, 0, 2] == 1
    # Lower temperature: nothing is confident enough -> all ignored.
    label_soft, conf_soft = guidance_targets(scores, (1, 3), temperature=1.0, zeta=0.9)
    assert (conf_soft < 0.9).all() and (label_soft == 255).all()
    # Threshold exactly at a pixel's confidence keeps it; just above drops it (temperature 10: not saturated).
    c = guidance_targets(scores, (1, 3), 10.0, 0.0)[1][0, 0, 2]
    assert 0.5 < c < 0.99
    assert guidance_targets(scores, (1, 3), 10.0, c.item())[0][0, 0, 2] == 1
    above = torch.nextafter(c, torch.tensor(2.0)).item()
    assert guidance_targets(scores, (1, 3), 10.0, above)[0][0, 0, 2] == 255


class _ConstantEncoder(torch.nn.Module):
    def __init__(self, dense):
        super().__init__()
        self.dense = dense
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, images):
        return (None, None, self.dense.expand(images.shape[0], -1, -1, -1))


def test_guidance_module_is_frozen_and_upsamples_to_the_image():
    dense = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1).T.reshape(1, 2, 1, 2)
    guide = DenseClipGuidance(_ConstantEncoder(dense), F.normalize(torch.eye(2), dim=-1), torch.tensor([0, 1]), 2,
                              temperature=100.0, zeta=0.9)
    guide.train()
    assert not guide.clip.training and not any(p.requires_grad for p in guide.clip.parameters())
    label = guide(torch.zeros(3, 3, 4, 8))
    assert label.shape == (3, 4, 8)
    assert (label[:, :, 0] == 0).all() and (label[:, :, -1] == 1).all()
