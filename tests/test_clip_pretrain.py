"""Stage `clip_pretrain`: captioned synthetic views, the contrastive objective, and the CLIP it writes."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.data.captions import CaptionConfig, CaptionedViews
from semivl_edge.data.classes import load_classes
from semivl_edge.data.synthetic import STREAM_TRAIN, STREAM_VAL, STREAM_WEB, render
from semivl_edge.model.clip import get_tokenizer, load_clip
from semivl_edge.basics import IMAGENET_MEAN, IMAGENET_STD
from semivl_edge.model.encoder import DenseCLIPEncoder
from semivl_edge.params import Params
from semivl_edge.pipeline import clip_pretrain as stage
from semivl_edge.pretrain.contrastive import PretrainConfig, contrastive_loss, learning_rate, pretrain

REPO = Path(__file__).resolve().parents[1]

CLASSES = load_classes(REPO / "data" / "classes" / "voc.yaml")
SMALL = CaptionConfig(images=6, view_size=64, long_side=96, close_up=0.5, min_fraction=0.05, seed=0)


@pytest.fixture(scope="module")
def views() -> CaptionedViews:
    return CaptionedViews(CLASSES, SMALL)


def test_captions_name_exactly_the_classes_that_cover_enough_of_the_view(views):
    labels = np.zeros((10, 10), np.uint8)
    labels[:5, :5] = CLASSES.names.index("cow")  # 25%
    labels[9, 9] = CLASSES.names.index("dog")  # 1%: below min_fraction 5%
    for seed in range(20):
        caption = views.caption(labels, random.Random(seed))
        named = caption.removeprefix("a photo of a ").split(" in front of ")[0].rstrip(".")
        assert named in views.words[CLASSES.names.index("cow")], caption
    empty = views.caption(np.zeros((10, 10), np.uint8), random.Random(0))
    assert empty.removeprefix("a photo of a ").rstrip(".") in views.scene_words


def test_views_are_deterministic_sized_and_drawn_from_their_own_stream(views):
    first = [views.sample(random.Random(3)) for _ in range(2)]
    assert np.array_equal(first[0][0], first[1][0]) and first[0][1] == first[1][1]
    for _ in range(10):
        view, caption = views.sample(random.Random(_))
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8 and caption.startswith("a photo of ")
    web = render(CLASSES, 0, STREAM_WEB, 0, 96)[0]
    for stream in (STREAM_TRAIN, STREAM_VAL):  # never a dataset image
        assert not np.array_equal(web, render(CLASSES, 0, stream, 0, 96)[0])


def test_contrastive_loss_hand_cases():
    eye = torch.eye(4)
    scale = torch.tensor(math.log(100.0))
    assert contrastive_loss(eye, eye, scale).item() < 1e-3  # each view matches only its caption
    same = torch.ones(4, 4)  # nothing tells the pairs apart: log(B)
    assert contrastive_loss(same, same, scale).item() == pytest.approx(math.log(4), abs=1e-5)
    swapped = eye[[1, 0, 2, 3]]
    assert contrastive_loss(eye, swapped, scale).item() > 10  # two views matched to the wrong captions


def test_learning_rate_warms_up_then_decays_to_zero():
    cfg = PretrainConfig(steps=110, batch_size=4, lr=1.0, weight_decay=0.1, warmup_steps=10, seed=0)
    assert learning_rate(5, cfg) == pytest.approx(0.5)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.5)
    assert learning_rate(110, cfg) == pytest.approx(0.0, abs=1e-12)


def test_class_token_read_out_is_clips_own_image_embedding():
    clip = load_clip("semivl-tiny", "none")
    encoder = DenseCLIPEncoder(clip.visual, 128, skip_blocks=(0, 2))
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        global_embedding, dense_mean = encoder.pooled_embeddings(images)
        torch.testing.assert_close(global_embedding, clip.encode_image(images), rtol=1e-4, atol=1e-5)
        dense = encoder(images)[-1]  # normalised per position: same directions as the unnormalised mean's terms
    assert dense_mean.shape == (2, 128) and dense.shape == (2, 128, 8, 8)


class FixedBatch:
    """The same views every step, so that the loss can only go down by learning them."""

    def __init__(self, views: CaptionedViews, size: int):
        self.config = views.config
        self.items = [views.sample(random.Random(i)) for i in range(size)]
        self.next = 0

    def sample(self, rng):
        self.next += 1
        return self.items[(self.next - 1) % len(self.items)]


def test_pretraining_lowers_the_contrastive_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    clip = load_clip("semivl-tiny", "none")
    batch = FixedBatch(CaptionedViews(CLASSES, CaptionConfig(images=8, view_size=128, long_side=96, close_up=0.5, min_fraction=0.05, seed=0)), 8)
    losses = []
    pretrain(clip, get_tokenizer("semivl-tiny"), batch, PretrainConfig(steps=10, batch_size=8, lr=1e-3, weight_decay=0.1, warmup_steps=1, seed=0),
             IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), on_step=lambda step, v: losses.append(v["loss"]))
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def _params(tmp_path, pretrained: str) -> Params:
    return Params({
        "clip": {"model": "semivl-tiny", "pretrained": pretrained},
        "clip_pretrain": {"steps": 2, "batch_size": 4, "lr": 5e-4, "weight_decay": 0.1, "warmup_steps": 1,
                          "images": 4, "close_up": 0.5, "min_fraction": 0.05, "seed": 0, "device": "cpu"},
        "classes": {"file": str(REPO / "data" / "classes" / "voc.yaml")},
        "data": {"synthetic": {"long_side": 96}},
    })


def test_stage_writes_a_clip_checkpoint_that_loads_strictly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage.run(_params(tmp_path, "models/clip/clip.safetensors"))
    meta = json.loads((tmp_path / "models/clip/meta.json").read_text())
    assert meta["trained"] and meta["steps"] == 2 and meta["clip_model"] == "semivl-tiny"
    loaded = load_clip("semivl-tiny", "models/clip/clip.safetensors")  # strict: every weight present
    random_init = load_clip("semivl-tiny", "none")
    assert not torch.equal(loaded.visual.proj, random_init.visual.proj)
    rows = (tmp_path / "reports/clip_pretrain/loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,loss_global,loss_dense" and len(rows) == 3
    metrics = json.loads((tmp_path / "reports/metrics/clip_pretrain.json").read_text())
    assert metrics["trained"] and metrics["final_loss"] > 0


def test_stage_trains_nothing_for_other_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage.run(_params(tmp_path, "none"))
    assert json.loads((tmp_path / "models/clip/meta.json").read_text()) == {"trained": False, "clip_pretrained": "none"}
    assert not (tmp_path / "models/clip/clip.safetensors").exists()
    assert (tmp_path / "reports/clip_pretrain/loss.csv").read_text().strip() == "step,loss,loss_global,loss_dense"


def test_stage_rejects_bad_parameters_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, "models/clip/clip.safetensors")
    params.data["clip_pretrain"]["batch_size"] = 1
    with pytest.raises(PipelineError, match="clip_pretrain.batch_size"):
        stage.run(params)
    assert not (tmp_path / "models/clip").exists()
