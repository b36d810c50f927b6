"""The training loop on a tiny configuration: every method learns, a killed run resumes bit-identically on CPU."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from semivl_edge.data.voc import VOCLayout
from semivl_edge.errors import PipelineError
from semivl_edge.train import checkpoint as ckpt
from semivl_edge.train import losses
from semivl_edge.train.data import CropSpec, LabeledCrops, UnlabeledViews
from semivl_edge.train.loop import Trainer, TrainOutputs, strong_view_targets
from test_train_support import CLASSES, cpu_runtime, make_voc_root, model_api, tiny_inputs, tiny_model_cfg, tiny_train_cfg

TIMING_KEYS = {"wall_time_s", "seconds_per_iteration", "images_per_second", "peak_memory_mb"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return make_voc_root(tmp_path_factory.mktemp("voc"))


def fixed_batches(inputs, cfg):
    layout = VOCLayout(inputs.voc_root)
    spec = CropSpec(cfg.crop_size, cfg.base_size, cfg.scale_range, inputs.model_cfg.pixel_mean, inputs.model_cfg.pixel_std)
    labeled = LabeledCrops(layout, inputs.labeled_ids, spec, CLASSES.num_classes)
    unlabeled = UnlabeledViews(layout, inputs.unlabeled_ids, spec, cfg.cutmix_prob, CLASSES.num_classes)
    lb = labeled.collate([labeled[(i, 10 + i)] for i in range(cfg.batch_size)])
    ub = unlabeled.collate([unlabeled[(i, 20 + i)] for i in range(cfg.batch_size)])
    pb = unlabeled.collate([unlabeled[(i + cfg.batch_size, 30 + i)] for i in range(cfg.batch_size)])
    return lb, ub, pb


@pytest.mark.parametrize("method", ["supervised", "unimatch", "semivl"])
def test_repeated_steps_on_a_fixed_batch_reduce_the_loss(voc_root, tmp_path, method):
    # Many scheduled iterations, so that lr and lambda stay (almost) constant over the few steps taken here.
    cfg = tiny_train_cfg(method=method, iterations=1000, cutmix_prob=1.0, lr=1e-3)
    inputs = tiny_inputs(voc_root)
    trainer = Trainer(cfg, inputs, TrainOutputs(tmp_path), cpu_runtime(), model_api())
    batches = fixed_batches(inputs, cfg) if method != "supervised" else fixed_batches(inputs, cfg)[:1]
    # 20 steps: the VLG decoder starts at the uniform prediction and, with random text embeddings, needs about ten
    # steps before its loss starts to fall (see reports/method_comparison.md); then it falls fast.
    history = [trainer.train_step(0, *batches) for _ in range(20)]
    losses = [row["loss"] for row in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses
    expected = {"supervised": {"loss_sup"},
                "unimatch": {"loss_sup", "loss_s1", "loss_s2", "loss_fp"},
                "semivl": {"loss_sup", "loss_s1", "loss_s2", "loss_fp", "loss_dc_s1", "loss_dc_s2", "loss_dc_fp"}}[method]
    assert {k for k in history[0] if k.startswith("loss_")} == expected
    # The target audit scores the unlabeled targets against the tiny set's masks (never a loss term).
    audited = {"supervised": set(), "unimatch": {"pseudo_label"}, "semivl": {"pseudo_label", "guidance"}}[method]
    assert {k.rsplit("_", 1)[0] for k in history[0] if k.endswith("_coverage")} == audited
    assert history[0]["lr_decoder"] == pytest.approx(10 * history[0]["lr_encoder"])


def _run(root, voc_root, stop_after=None, fingerprint="fp", **changes):
    cfg = tiny_train_cfg(**changes)
    trainer = Trainer(cfg, tiny_inputs(voc_root, fingerprint=fingerprint), TrainOutputs(root), cpu_runtime(), model_api())
    return trainer, trainer.run(stop_after=stop_after)


def _curves(root):
    folder = root / "reports" / "train" / "plots" / "metrics"
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*.tsv"))}


def test_a_killed_run_resumes_to_the_same_weights_metrics_and_curves(voc_root, tmp_path):
    straight_root, resumed_root = tmp_path / "straight", tmp_path / "resumed"
    _, straight = _run(straight_root, voc_root)

    _, stopped = _run(resumed_root, voc_root, stop_after=2)
    assert stopped is None
    assert [p.name for p in (resumed_root / "models" / "checkpoints").iterdir()] == ["step_000002"]
    assert not (resumed_root / "models" / "model.safetensors").exists()
    trainer, resumed = _run(resumed_root, voc_root)
    assert trainer.progress.history[0]["step"] == 1  # the curves of the first session were carried over

    assert {k: v for k, v in resumed.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in straight.items() if k not in TIMING_KEYS}
    a = load_file(straight_root / "models" / "model.safetensors")
    b = load_file(resumed_root / "models" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _curves(straight_root) == _curves(resumed_root)
    # A finished run leaves no checkpoint to resume, only a note.
    left = [p.name for p in (resumed_root / "models" / "checkpoints").iterdir()]
    assert left == [ckpt.COMPLETED_FILE]
    metrics = json.loads((resumed_root / "reports" / "metrics" / "train.json").read_text())
    assert metrics["iterations"] == 4 and 0 <= metrics["miou"] <= 100 and metrics["saved_model"] == "best"
    assert metrics["peak_memory_mb"] > 0 and metrics["device"].startswith("cpu")


def test_a_checkpoint_of_another_configuration_is_not_resumed(voc_root, tmp_path):
    _run(tmp_path, voc_root, stop_after=2, fingerprint="old")
    directory = tmp_path / "models" / "checkpoints"
    assert ckpt.load_latest(directory, "old", world_size=1) is not None
    assert ckpt.load_latest(directory, "new", world_size=1) is None
    assert ckpt.load_latest(directory, "old", world_size=2) is None
    trainer, metrics = _run(tmp_path, voc_root, fingerprint="new", iterations=2)
    assert metrics["iterations"] == 2 and len(trainer.progress.history) == 2


def test_validation_during_training_scores_like_the_evaluation_stage(voc_root):
    """The best-val checkpoint is chosen by the number eval_gpu reports: same pipeline, same metric."""
    from semivl_edge.evaluation.evaluate import evaluate as evaluate_stage
    from semivl_edge.evaluation.inference import InferenceConfig, SegmentationPipeline
    from semivl_edge.model.segmenter import build_model
    from semivl_edge.train.validate import evaluate as evaluate_training, load_val_items

    inputs = tiny_inputs(voc_root)
    torch.manual_seed(0)
    model = build_model(inputs.model_cfg, load_pretrained=False)
    geometry = InferenceConfig(mode="sliding", short_side=40, crop_size=32, stride=24)
    layout = VOCLayout(voc_root)
    mean, std = inputs.model_cfg.pixel_mean, inputs.model_cfg.pixel_std
    items = load_val_items(layout, inputs.val_ids, CLASSES.num_classes)
    during_training = evaluate_training(model, inputs.class_embeddings, items, geometry, mean, std, cpu_runtime(), False)
    assert model.training  # restored after validation

    pipeline = SegmentationPipeline(model, inputs.class_embeddings, mean, std, geometry).eval()
    with torch.no_grad():
        stage = evaluate_stage(pipeline, layout, inputs.val_ids, CLASSES.num_classes, class_names=CLASSES.names)
    assert during_training == pytest.approx(stage.scores.miou)


def test_cutmix_boxes_give_the_partners_targets_exactly_where_its_pixels_were_pasted():
    """Stand-in predictions that identify the image: the weak image is class 1 everywhere (confident), the partner
    class 2 (less confident, its own ignore row); each strong view's targets are the partner's inside its box."""
    size = 8

    def predictions(cls, margin):
        logits = torch.zeros(2, 4, size, size)
        logits[:, cls] = margin
        return logits
    conf_w, label_w = losses.pseudo_labels(predictions(1, 9.0))
    conf_p, label_p = losses.pseudo_labels(predictions(2, 3.0))
    ignore_w = torch.zeros(2, size, size, dtype=torch.uint8)
    ignore_p = ignore_w.clone()
    ignore_p[:, 0] = 255
    boxes = [torch.zeros(2, size, size, dtype=torch.uint8) for _ in range(2)]
    boxes[0][0, 2:5, 3:7] = 1   # view 1, image 0: a box; image 1: none
    boxes[1][:, 0:4, 0:8] = 1   # view 2: the top half of both images
    targets = strong_view_targets((label_w, conf_w, ignore_w), (label_p, conf_p, ignore_p), boxes)
    for box, (label, conf, ignore) in zip(boxes, targets):
        inside = box.bool()
        assert torch.equal(label, torch.where(inside, 2, 1))
        assert torch.equal(conf, torch.where(inside, conf_p, conf_w)) and conf_p.max() < conf_w.min()
        assert torch.equal(ignore, torch.where(inside, ignore_p, ignore_w))
    assert (targets[0][0][1] == 1).all()  # no box: the weak image's targets alone


def test_save_chooses_the_best_or_the_final_weights(voc_root, tmp_path, monkeypatch):
    scores = iter([50.0, 10.0] * 2)  # val mIoU at iterations 2 and 4 of each run: the best is the earlier
    monkeypatch.setattr("semivl_edge.train.loop.evaluate", lambda *args, **kwargs: next(scores))
    weights = {}
    for save in ("best", "final"):
        trainer, metrics = _run(tmp_path / save, voc_root, save=save, lr=1e-2)
        weights[save] = load_file(tmp_path / save / "models" / "model.safetensors")
        assert metrics["saved_model"] == save and metrics["miou"] == 50.0 and metrics["best_iteration"] == 2
        assert metrics["miou_final"] == 10.0
        kept = trainer.best_weights if save == "best" else ckpt.state_dict_to_cpu(trainer.segmenter)
        assert all(torch.equal(weights[save][k], kept[k]) for k in kept)
    assert any(not torch.equal(weights["best"][k], weights["final"][k]) for k in weights["best"])


def test_the_feature_perturbed_branch_compares_cosines():
    """dropout2d zeroes channels of the weak view's dense map and scales the rest 2x; the VLG decoder's similarity
    for that branch must still be the cosine of the perturbed features with the text (the official head's)."""
    from conftest import build_tiny_segmenter
    from semivl_edge.train.loop import StepNetwork

    segmenter, _, text = build_tiny_segmenter(num_classes=5, crop=32)
    seen = []
    similarity = segmenter.decoder.similarity
    segmenter.decoder.similarity = lambda dense, t: seen.append((dense, similarity(dense, t))) or seen[-1][1]
    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        StepNetwork(segmenter, text, fp_dropout=0.5)(images[:2], images[2:4], images[4:])
    (_, clean_weak), (dense, sim) = seen  # the weak view alone (pseudo-labels), then everything with gradients
    assert clean_weak.shape[0] == 2
    perturbed = dense[-2:]
    assert not torch.allclose(perturbed.norm(dim=1), torch.ones(()), atol=0.1)  # the branch is really perturbed
    cosine = F.cosine_similarity(perturbed[:, None], text[None, :, :, None, None], dim=2)
    assert torch.allclose(sim[-2:], cosine, atol=1e-5)
    assert torch.allclose(sim[:-2], torch.einsum("bchw,nc->bnhw", dense[:-2], text), atol=1e-5)  # clean: unit norm


def test_the_step_network_gives_the_predictions_and_gradients_of_decoding_everything_in_one_graph():
    """The weak view is decoded without a graph (it only makes pseudo-labels); predictions and gradients must be
    those of the official layout, where it is decoded with grad in one batch with the rest."""
    from conftest import build_tiny_segmenter
    from semivl_edge.train.loop import StepNetwork

    segmenter, _, text = build_tiny_segmenter(num_classes=5, crop=32)
    images = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labeled, weak, strong = images[:2], images[2:4], images[4:]

    def official():
        features = segmenter.encode(images)
        perturbed = [F.dropout2d(f[2:4], 0.5, training=True) for f in features]
        logits = segmenter.decode(tuple(torch.cat([f, p]) for f, p in zip(features, perturbed)), text, (32, 32))
        return logits.split([2, 2, 6, 2])

    results = []
    for forward in (official, lambda: StepNetwork(segmenter, text, fp_dropout=0.5)(labeled, weak, strong)):
        torch.manual_seed(1)  # the same dropout masks
        pred_x, pred_w, pred_s, pred_fp = forward()
        (pred_x.logsumexp(1).mean() + pred_s.logsumexp(1).mean() + pred_fp.logsumexp(1).mean()).backward()
        grads = {name: p.grad.clone() for name, p in segmenter.named_parameters() if p.grad is not None}
        segmenter.zero_grad(set_to_none=True)
        results.append(([t.detach() for t in (pred_x, pred_w, pred_s, pred_fp)], grads))
    (theirs, their_grads), (ours, our_grads) = results
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert not ours[1].requires_grad  # the clean weak prediction keeps no graph


def test_the_imagenet_vit_baseline_trains_with_consistency_and_says_where_its_encoder_came_from(voc_root, tmp_path):
    model_cfg = tiny_model_cfg(encoder="imagenet_vit", decoder="plain", spatial_finetune=False)
    trainer = Trainer(tiny_train_cfg(method="unimatch", iterations=2), tiny_inputs(voc_root, model_cfg),
                      TrainOutputs(tmp_path), cpu_runtime(), model_api())
    assert all(p.requires_grad for p in trainer.segmenter.encoder.parameters())  # fully fine-tuned
    metrics = trainer.run()
    assert metrics["encoder"] == "ImageNet ViT shaped like semivl-tiny, random init: no model.imagenet_weights"
    with pytest.raises(PipelineError, match="dense CLIP guidance needs model.encoder clip"):
        Trainer(tiny_train_cfg(method="semivl"), tiny_inputs(voc_root, model_cfg), TrainOutputs(tmp_path / "g"),
                cpu_runtime(), model_api())
