"""The target audit: coverage, precision and object share of the unlabeled targets, against hand-counted cases."""
from __future__ import annotations

import pytest
import torch

from semivl_edge.train.audit import TargetAudit, ratios, target_counts


def test_counts_and_ratios_match_a_hand_counted_map():
    truth = torch.tensor([[0, 0, 0, 5],
                          [0, 5, 5, 5],
                          [255, 255, 7, 7]])
    # 255 = no target (unconfident pseudo-label / CLIP below zeta).
    target = torch.tensor([[0, 0, 255, 0],     # background right, right, none; object called background
                           [5, 5, 255, 5],     # background called 5; object right, none, right
                           [0, 3, 7, 255]])    # truth unknown (not counted) x2; object right; none
    counts = target_counts(target, truth)
    # known 10; targeted 7; correct 5 (2 bg + 3 objects); object targets 4 (5, 5, 5, 7); true objects 6; found 3
    assert counts.tolist() == [10, 7, 5, 4, 6, 3]
    assert ratios(counts) == pytest.approx({"coverage": 0.7, "precision": 5 / 7, "object_share": 4 / 7,
                                            "object_recall": 0.5})


def test_audit_accumulates_until_summary_and_skips_maps_without_truth():
    audit = TargetAudit()
    truth = torch.zeros(2, 4, dtype=torch.long)
    truth[:, 2:] = 3
    all_background = torch.zeros(2, 4, dtype=torch.long)
    terms = audit.step("pseudo_label", all_background, truth)
    assert terms == pytest.approx({"pseudo_label_coverage": 1.0, "pseudo_label_precision": 0.5,
                                   "pseudo_label_object_share": 0.0, "pseudo_label_object_recall": 0.0})
    assert audit.step("guidance", truth.clone(), truth)["guidance_object_recall"] == 1.0
    assert audit.step("guidance", truth, torch.full_like(truth, 255)) == {}  # no mask: nothing to say
    line = audit.summary()
    assert "pseudo-labels cover 100.0% of the pixels, 50.0% right, 0.0% objects, 0.0% of object pixels found" in line
    assert "CLIP labels cover 100.0% of the pixels, 100.0% right, 50.0% objects, 100.0% of object pixels found" in line
    assert audit.summary() == ""  # counting starts afresh
