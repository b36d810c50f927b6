"""mIoU, per-class IoU and pixel accuracy against hand-computed confusion matrices."""
import json
import math

import numpy as np
import pytest

from semivl_edge.evaluation.metrics import (
    ConfusionAccumulator, SegmentationScores, confusion_matrix, mean_iou, per_class_iou, pixel_accuracy,
)

# 2x4 image, 3 classes; the bottom-right pixel is ignored (255).
TARGET = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 0, 2, 2]], dtype=np.uint8)
# rows = ground truth, columns = prediction, counted by hand over the 7 non-ignored pixels
EXPECTED = np.array([[3, 1, 0], [0, 2, 1], [0, 0, 0]])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, 3), EXPECTED)


def test_iou_by_hand():
    iou = per_class_iou(EXPECTED)
    # class 0: 3 / (4 + 3 - 3); class 1: 2 / (3 + 3 - 2); class 2 only predicted: 0 / 1
    np.testing.assert_allclose(iou, [0.75, 0.5, 0.0])
    assert mean_iou(EXPECTED) == pytest.approx((75 + 50 + 0) / 3)
    assert pixel_accuracy(EXPECTED) == pytest.approx(5 / 7 * 100)


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    target = np.full((3, 3), 255, dtype=np.uint8)
    target[0, 0] = 1
    pred = np.zeros((3, 3), dtype=np.uint8)
    pred[0, 0] = 1
    matrix = confusion_matrix(pred, target, 2)
    assert matrix.sum() == 1 and matrix[1, 1] == 1


def test_class_absent_from_gt_and_prediction_is_nan_and_excluded():
    matrix = confusion_matrix(PRED, TARGET, 4)  # class 3 appears nowhere
    iou = per_class_iou(matrix)
    assert math.isnan(iou[3])
    assert mean_iou(matrix) == pytest.approx((75 + 50 + 0) / 3)
    scores = SegmentationScores.from_matrix(matrix, ["bg", "a", "b", "c"])
    assert scores.per_class_iou == {"bg": 75.0, "a": 50.0, "b": 0.0, "c": None}
    metrics = scores.to_metrics()
    assert json.loads(json.dumps(metrics))["per_class_iou"]["c"] is None  # null in the metrics file


def test_perfect_and_zero_predictions():
    target = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    perfect = confusion_matrix(target, target, 3)
    assert mean_iou(perfect) == 100.0 and pixel_accuracy(perfect) == 100.0
    wrong = confusion_matrix((target + 1) % 3, target, 3)
    assert mean_iou(wrong) == 0.0 and pixel_accuracy(wrong) == 0.0


def test_all_ignored_gives_nan_not_a_number():
    target = np.full((2, 2), 255, dtype=np.uint8)
    matrix = confusion_matrix(np.zeros((2, 2), dtype=np.uint8), target, 3)
    assert math.isnan(mean_iou(matrix)) and math.isnan(pixel_accuracy(matrix))
    assert SegmentationScores.from_matrix(matrix, ["a", "b", "c"]).to_metrics()["miou"] is None


def test_prediction_outside_the_classes_is_a_bug():
    target = np.zeros((2, 2), dtype=np.uint8)
    pred = np.array([[0, 3], [0, 0]], dtype=np.uint8)
    with pytest.raises(AssertionError):
        confusion_matrix(pred, target, 3)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def test_accumulated_over_images_not_averaged_per_image():
    accumulator = ConfusionAccumulator(3)
    accumulator.update(PRED, TARGET)
    accumulator.update(TARGET[:, :2], TARGET[:, :2])  # a second, perfectly predicted image
    np.testing.assert_array_equal(accumulator.matrix, EXPECTED + np.array([[4, 0, 0], [0, 0, 0], [0, 0, 0]]))
    # summed: class 0 IoU = 7 / (8 + 7 - 7); a per-image mean would differ
    assert per_class_iou(accumulator.matrix)[0] == pytest.approx(7 / 8)


def test_scores_rows_carry_counts_and_names():
    scores = SegmentationScores.from_matrix(EXPECTED, ["background", "cat", "dog"])
    assert scores.miou == pytest.approx(125 / 3)
    cat = scores.per_class_rows[1]
    assert cat == {"class": "cat", "iou": 50.0, "intersection": 2, "union": 4, "gt_pixels": 3, "predicted_pixels": 3}
