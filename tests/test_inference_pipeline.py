"""The shared inference implementation: window geometry, sliding vs whole, scripted vs eager, uint8 window path."""
from __future__ import annotations

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.inference import (
    InferenceConfig,
    SegmentationPipeline,
    count_windows,
    image_windows,
    normalise,
    predict_windows,
    resized_size,
    window_boxes,
    window_starts,
)
from semivl_edge.export.torchscript import script_pipeline
from semivl_edge.params import Params

from conftest import build_tiny_segmenter

CROP = 64
CLASSES = 5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_segmenter(CLASSES, CROP)


def random_image(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- geometry -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,crop,stride", [(64, 64, 48), (65, 64, 48), (200, 64, 48), (512, 512, 426),
                                                 (683, 512, 426), (30, 64, 48), (128, 64, 64), (129, 32, 1)])
def test_window_starts_cover_the_axis_and_end_flush(length, crop, stride):
    starts = window_starts(max(length, crop), crop, stride)
    padded = max(length, crop)
    assert starts[0] == 0
    assert starts[-1] + crop == padded  # last window flush with the border
    assert all(0 <= s <= padded - crop for s in starts)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # no gaps
    covered = torch.zeros(padded, dtype=torch.bool)
    for s in starts:
        covered[s : s + crop] = True
    assert covered.all()


@pytest.mark.parametrize("height,width", [(64, 80), (80, 64), (64, 64), (40, 150), (300, 301)])
def test_window_boxes_cover_the_image(height, width):
    crop, stride = 64, 48
    covered = torch.zeros(max(height, crop), max(width, crop), dtype=torch.bool)
    boxes = window_boxes(height, width, crop, stride)
    for top, left in boxes:
        assert top + crop <= covered.shape[0] and left + crop <= covered.shape[1]
        covered[top : top + crop, left : left + crop] = True
    assert covered.all()
    assert len(boxes) == len(set(boxes))


def test_resized_size_keeps_the_aspect_ratio():
    assert resized_size(375, 500, 512) == [512, 683]
    assert resized_size(500, 375, 512) == [683, 512]
    assert resized_size(64, 80, 64) == [64, 80]


def test_count_windows_matches_the_paper_setting():
    cfg = InferenceConfig("sliding", 512, 512, 426)
    assert count_windows(375, 500, cfg) == 2  # 512 x 683: two windows along the long side
    assert count_windows(500, 500, cfg) == 1
    assert count_windows(375, 500, InferenceConfig("whole", 512, 512, 426)) == 1


def test_inference_config_from_params_and_validation():
    params = Params({"eval": {"mode": "sliding", "short_side": 128, "crop_size": 128, "stride": 106}})
    assert InferenceConfig.from_params(params) == InferenceConfig("sliding", 128, 128, 106)
    with pytest.raises(PipelineError, match="eval.stride"):
        InferenceConfig("sliding", 128, 128, 200)
    with pytest.raises(PipelineError, match="eval.mode"):
        InferenceConfig.from_params(Params({"eval": {"mode": "tiles", "short_side": 1, "crop_size": 1, "stride": 1}}))
    scaled = InferenceConfig("sliding", 512, 512, 426).for_window(256)
    assert (scaled.short_side, scaled.crop_size, scaled.stride) == (256, 256, 213)


# --- the pipeline with the real tiny model ----------------------------------------------------------


def test_sliding_equals_whole_when_the_image_is_one_window(tiny):
    network, cfg, text = tiny
    image = random_image(CROP, CROP)
    sliding = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, InferenceConfig("sliding", CROP, CROP, 48))
    whole = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, InferenceConfig("whole", CROP, CROP, 48))
    with torch.no_grad():
        a, b = sliding(image), whole(image)
        direct = network(normalise(image, sliding.pixel_mean, sliding.pixel_std), text)
    assert a.shape == (1, CLASSES, CROP, CROP)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, direct, rtol=0, atol=1e-6)


def test_output_is_at_the_input_size_for_any_size(tiny):
    network, cfg, text = tiny
    pipeline = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, InferenceConfig("sliding", CROP, CROP, 48))
    with torch.no_grad():
        for height, width in [(64, 80), (50, 33), (97, 64)]:
            assert pipeline(random_image(height, width)).shape == (1, CLASSES, height, width)
    with pytest.raises(ValueError, match="uint8"):
        pipeline(torch.zeros(1, 3, 64, 64))


def test_scripted_pipeline_matches_eager_on_non_square_images(tiny):
    network, cfg, text = tiny
    infer = InferenceConfig("sliding", CROP, CROP, 48)
    eager = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, infer).eval()
    scripted = script_pipeline(network, text, cfg.pixel_mean, cfg.pixel_std, infer)
    with torch.no_grad():
        for image in (random_image(64, 80, batch=2), random_image(90, 70, seed=1)):
            torch.testing.assert_close(scripted(image), eager(image), rtol=0, atol=1e-5)
        # open vocabulary: another class set through segment()
        subset = text[:3]
        image = random_image(70, 64, seed=2)
        torch.testing.assert_close(scripted.segment(image, subset), eager.segment(image, subset), rtol=0, atol=1e-5)


def test_predict_windows_equals_the_pipeline(tiny):
    """The uint8 window path (mobile artifacts) and the pipeline share resize, padding, windows and averaging."""
    network, cfg, text = tiny
    mean = torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(1, 3, 1, 1)

    def window_fn(window: torch.Tensor) -> torch.Tensor:  # what a mobile artifact computes
        return network(normalise(window, mean, std), text)

    with torch.no_grad():
        # no resize; resized down; resized up and padded to the window (short side 60 < crop 64)
        for image, short_side in ((random_image(64, 100), 64), (random_image(80, 120, seed=3), 64),
                                  (random_image(40, 41, seed=4), 60)):
            geometry = InferenceConfig("sliding", short_side, CROP, 48)
            pipeline = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, geometry).eval()
            torch.testing.assert_close(predict_windows(window_fn, image, geometry), pipeline(image), rtol=0, atol=1e-5)
    infer = InferenceConfig("sliding", CROP, CROP, 48)
    image = random_image(64, 100)
    assert len(image_windows(image, infer)) == count_windows(64, 100, infer) == 2
    with pytest.raises(PipelineError, match="uint8"):
        predict_windows(window_fn, image.float(), infer)
