"""evaluate() on a tiny VOC root with stand-in predictors whose scores are known in advance."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from semivl_edge.data.voc import VOCLayout

from conftest import oracle_voc
from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.evaluate import evaluate, evaluation_metrics, write_evaluation_dir

NUM_CLASSES = 3
NAMES = ["background", "cat", "dog"]
PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def write_voc(root, sizes=((16, 24), (24, 16), (20, 20)), seed=0):
    """Oracle VOC root (conftest.oracle_voc): grey level 40 * class, 255 = ignore in masks; sizes are (h, w)."""
    ids = oracle_voc(root, {f"2007_{i:06d}": (w, h) for i, (h, w) in enumerate(sizes)}, NUM_CLASSES, PALETTE, seed)
    return VOCLayout(root), ids


def oracle(image: torch.Tensor) -> torch.Tensor:
    """Reads the class back from the grey level: a perfect predictor."""
    classes = (image[:, 0].long() + 20) // 40
    return torch.nn.functional.one_hot(classes, NUM_CLASSES).permute(0, 3, 1, 2).float()


def always(cls):
    def predict(image):
        logits = torch.zeros(1, NUM_CLASSES, image.shape[2], image.shape[3])
        logits[:, cls] = 1.0
        return logits
    return predict


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path / "VOC")


def test_perfect_predictor_scores_100(voc):
    layout, ids = voc
    result = evaluate(oracle, layout, ids, NUM_CLASSES, class_names=NAMES)
    assert result.scores.miou == pytest.approx(100.0)
    assert result.scores.pixel_acc == pytest.approx(100.0)
    assert result.images == 3
    # ignored first rows are not counted
    assert result.matrix.sum() == sum(h * w - w for h, w in ((16, 24), (24, 16), (20, 20)))


def test_constant_predictor_matches_counted_confusion(voc):
    layout, ids = voc
    result = evaluate(always(1), layout, ids, NUM_CLASSES, class_names=NAMES)
    gt_counts = result.matrix.sum(axis=1)
    counted = gt_counts.sum()
    # everything predicted "cat": IoU(cat) = |cat| / all counted pixels, the others 0
    assert result.scores.per_class_iou["cat"] == pytest.approx(round(gt_counts[1] / counted * 100, 4))
    assert result.scores.per_class_iou["background"] == 0.0
    assert result.scores.pixel_acc == pytest.approx(gt_counts[1] / counted * 100)


def test_warmup_timing_windows_and_kept_predictions(voc, tmp_path):
    layout, ids = voc
    ticks = iter(range(1000))
    result = evaluate(
        oracle, layout, ids, NUM_CLASSES, class_names=NAMES, warmup=1, qualitative=2,
        windows_for=lambda h, w: 4, timer=lambda: next(ticks) * 0.5,  # every call "takes" 500 ms
    )
    assert result.image_times_ms == [500.0, 500.0]  # 3 images, the first is warm-up
    assert result.window_times_ms == [125.0, 125.0]
    assert list(result.predictions) == ids[:2]
    metrics = evaluation_metrics(result)
    assert metrics["latency_ms"]["p50"] == 500.0 and metrics["latency_per_window_ms"]["mean"] == 125.0

    out = tmp_path / "out"
    write_evaluation_dir(out, result, PALETTE)
    saved = Image.open(out / "predictions" / f"{ids[0]}.png")
    assert saved.mode == "P"
    np.testing.assert_array_equal(np.asarray(saved), result.predictions[ids[0]])
    rows = list(csv.DictReader(open(out / "per_class_iou.csv")))
    assert [r["class"] for r in rows] == NAMES and float(rows[0]["iou"]) == 100.0


def test_short_list_is_cycled_to_the_requested_latency_samples(voc):
    layout, ids = voc
    calls = []
    result = evaluate(lambda x: (calls.append(1), oracle(x))[1], layout, ids, NUM_CLASSES,
                      class_names=NAMES, warmup=2, min_timed=5)
    assert len(result.image_times_ms) == 5
    assert len(calls) == 2 + 5  # the extra timed calls are not scored twice
    assert result.matrix.sum() == evaluate(oracle, layout, ids, NUM_CLASSES, class_names=NAMES).matrix.sum()


def test_unreadable_image_is_one_line_error(voc):
    layout, ids = voc
    layout.image_path(ids[1]).write_bytes(b"not an image")
    with pytest.raises(PipelineError) as error:
        evaluate(oracle, layout, ids, NUM_CLASSES, class_names=NAMES)
    assert str(layout.image_path(ids[1])) in str(error.value) and "\n" not in str(error.value)


def test_mask_with_foreign_labels_or_size_is_rejected(voc):
    layout, ids = voc
    Image.fromarray(np.full((16, 24), 7, dtype=np.uint8)).save(layout.mask_path(ids[0]))
    with pytest.raises(PipelineError, match="outside"):
        evaluate(oracle, layout, ids, NUM_CLASSES, class_names=NAMES)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(layout.mask_path(ids[0]))
    with pytest.raises(PipelineError, match="mask is 5x5"):
        evaluate(oracle, layout, ids, NUM_CLASSES, class_names=NAMES)


def test_predictor_with_wrong_output_is_named(voc):
    layout, ids = voc
    with pytest.raises(PipelineError, match="models/x.ts: returned logits"):
        evaluate(lambda x: torch.zeros(1, 2, 4, 4), layout, ids, NUM_CLASSES, class_names=NAMES, desc="models/x.ts")


def test_empty_list_is_an_error(voc):
    layout, _ = voc
    with pytest.raises(PipelineError, match="empty"):
        evaluate(oracle, layout, [], NUM_CLASSES, class_names=NAMES)


def test_warmup_longer_than_the_list_is_still_honoured(voc):
    layout, ids = voc
    calls = []
    result = evaluate(lambda x: (calls.append(1), oracle(x))[1], layout, ids, NUM_CLASSES,
                      class_names=NAMES, warmup=5, min_timed=2)
    assert len(calls) == 5 + 2 and len(result.image_times_ms) == 2
