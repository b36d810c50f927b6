"""The training data stream: joint augmentation, seeded per-sample views, resumable and rank-independent order."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from semivl_edge.data.voc import VOCLayout, read_ids
from semivl_edge.errors import PipelineError
from semivl_edge.basics import IMAGENET_MEAN, IMAGENET_STD
from semivl_edge.train import augment
from semivl_edge.train.data import CropSpec, LabeledCrops, StepBatchSampler, UnlabeledViews, make_loader
from test_train_support import CLASSES, make_voc_root

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return make_voc_root(tmp_path_factory.mktemp("voc"))


def spec(crop=32, base=32):
    return CropSpec(crop, base, (0.5, 2.0), IMAGENET_MEAN, IMAGENET_STD)


def test_geometry_moves_image_and_mask_together_and_pads_with_0_and_255():
    # An image whose pixel value encodes its mask: after any crop / flip / rescale (nearest for the mask) the
    # relation must still hold wherever the image was not padded.
    height, width = 20, 30
    mask = np.zeros((height, width), np.uint8)
    mask[:, 15:] = 3
    image = np.where(mask[..., None] == 3, 200, 40).astype(np.uint8).repeat(3, axis=2)
    transform = augment.geometric_transform(crop_size=48, base_size=20, scale_range=(1.0, 1.0))
    for seed in range(10):
        with augment.seeded(seed):
            out_img, out_mask = transform(augment.to_image(image), augment.to_mask(mask))
        assert isinstance(out_mask, tv_tensors.Mask) and out_img.shape == (3, 48, 48) and out_mask.shape == (48, 48)
        padded = out_mask == 255
        assert padded.any()  # 20 px short side -> a 48 crop needs padding
        assert (out_img[:, padded] == 0).all()  # image padded with 0
        assert ((out_img[0][out_mask == 3]) > 150).all() and ((out_img[0][out_mask == 0]) < 90).all()


def test_labeled_crops_are_a_function_of_the_seed(voc_root):
    layout = VOCLayout(voc_root)
    ids = read_ids(layout.list_path("train"))
    data = LabeledCrops(layout, ids, spec(), CLASSES.num_classes)
    a, b, c = data[(1, 123)], data[(1, 123)], data[(1, 124)]
    assert a["image"].shape == (3, 32, 32) and a["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])
    values = set(a["mask"].unique().tolist())
    assert values <= set(range(CLASSES.num_classes)) | {255}


def test_unlabeled_views_share_the_weak_geometry(voc_root):
    layout = VOCLayout(voc_root)
    ids = read_ids(layout.list_path("train_aug"))
    data = UnlabeledViews(layout, ids, CropSpec(32, 16, (1.0, 1.0), IMAGENET_MEAN, IMAGENET_STD), cutmix_prob=1.0,
                          num_classes=CLASSES.num_classes)
    item = {k: v[0] for k, v in data.collate([data[(0, 5)]]).items()}
    assert set(item) == {"weak", "strong1", "strong2", "ignore", "box1", "box2", "truth"}
    padded = item["ignore"] == 255
    assert padded.any() and not padded.all()  # short side 16 < crop 32: padding is marked for the losses
    assert set(item["ignore"].unique().tolist()) == {0, 255}
    pad_value = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1)
    # The weak view is padded with image 0; the strong views are colour/blur perturbations of it (their padded
    # pixels change too, and the losses ignore them through the same ignore map).
    assert torch.allclose(item["weak"][:, padded], pad_value.expand(3, int(padded.sum())), atol=1e-5)
    assert item["strong1"].shape == item["weak"].shape == (3, 32, 32)
    assert item["box1"].any() and item["box2"].any()
    assert (item["truth"][padded] == 255).all() and (item["truth"][~padded] != 255).any()


def test_unlabeled_truth_is_cropped_like_the_weak_view_and_changes_nothing_else(voc_root, tmp_path):
    # An image whose red channel encodes its mask (class 3 on the right half): after the random geometry the truth
    # must still sit under the bright pixels. Without a mask file the views are identical and the truth unknown.
    root = tmp_path / "VOC2012"
    shutil.copytree(voc_root, root)
    layout = VOCLayout(root)
    image_id = read_ids(layout.list_path("train_aug"))[-1]
    mask = np.zeros((24, 36), np.uint8)
    mask[:, 18:] = 3
    mask[0, 0] = 77  # not a class: unknown to the audit, no error
    Image.fromarray(np.where(mask[..., None] == 3, 220, 30).astype(np.uint8).repeat(3, axis=2)).save(
        layout.image_path(image_id), quality=100)
    Image.fromarray(mask).save(layout.mask_path(image_id))
    data = UnlabeledViews(layout, [image_id], CropSpec(32, 24, (1.0, 1.0), IMAGENET_MEAN, IMAGENET_STD), cutmix_prob=0.5,
                          num_classes=CLASSES.num_classes)
    for seed in range(6):
        item = {k: v[0] for k, v in data.collate([data[(0, seed)]]).items()}
        truth, raw = item["truth"], item["weak"][0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        assert set(truth.unique().tolist()) <= {0, 3, 255}
        assert (raw[truth == 3] > 0.6).all() and (raw[truth == 0] < 0.4).all()
    layout.mask_path(image_id).unlink()
    blind = {k: v[0] for k, v in data.collate([data[(0, 5)]]).items()}
    assert (blind["truth"] == 255).all()
    assert all(torch.equal(blind[k], item[k]) for k in item if k != "truth")


def test_step_sampler_resumes_and_is_independent_of_world_size():
    straight = list(StepBatchSampler(10, 4, seed=3, stream=1, start_step=0, end_step=7))
    resumed = list(StepBatchSampler(10, 4, seed=3, stream=1, start_step=4, end_step=7))
    assert resumed == straight[4:]
    ranks = [list(StepBatchSampler(10, 4, seed=3, stream=1, start_step=0, end_step=7, rank=r, world_size=2))
             for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == straight  # rank slices of the same global batches
    # Each pass over the 10 items visits every item once; streams differ.
    indices = [i for batch in straight for i, _ in batch]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    other = list(StepBatchSampler(10, 4, seed=3, stream=2, start_step=0, end_step=7))
    assert other != straight
    with pytest.raises(PipelineError, match="divisible"):
        StepBatchSampler(10, 3, seed=0, stream=0, start_step=0, end_step=1, rank=0, world_size=2)


def test_batches_do_not_depend_on_the_number_of_workers(voc_root):
    layout = VOCLayout(voc_root)
    ids = read_ids(layout.list_path("train_aug"))
    data = UnlabeledViews(layout, ids, spec(), cutmix_prob=0.5, num_classes=CLASSES.num_classes)

    def batches(workers):
        sampler = StepBatchSampler(len(ids), 2, seed=0, stream=1, start_step=0, end_step=3)
        return list(make_loader(data, sampler, workers, seed=0, pin_memory=False))

    zero, two = batches(0), batches(2)
    for a, b in zip(zero, two):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    state = torch.get_rng_state()
    batches(0)
    assert torch.equal(state, torch.get_rng_state())  # the data stream never touches the training RNG


def test_decoded_files_kept_in_memory_change_no_crop(voc_root):
    layout = VOCLayout(voc_root)
    ids = read_ids(layout.list_path("train_aug"))
    keys = [(i % len(ids), 40 + i) for i in range(2 * len(ids))]  # every image twice: the second from memory
    for make in (lambda keep: LabeledCrops(layout, read_ids(layout.list_path("train")), spec(), CLASSES.num_classes, keep),
                 lambda keep: UnlabeledViews(layout, ids, spec(), 0.5, CLASSES.num_classes, keep)):
        fresh, kept = make(False), make(True)
        for key in keys[:len(fresh)] + keys[:len(fresh)]:
            a, b = fresh.collate([fresh[key]]), kept.collate([kept[key]])
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert kept.files.store and not fresh.files.store


def strong_params(seeds):
    rows = []
    for seed in seeds:
        with augment.seeded(seed):
            rows.append(augment.sample_strong_params())
    return torch.stack(rows)


def test_strong_views_match_torchvision_up_to_its_8_bit_rounding():
    # The documented difference from torchvision's per-image uint8 ColorJitter / RandomGrayscale / GaussianBlur:
    # the batched float path rounds nothing between the adjustments. Same parameters, same order.
    from torchvision.transforms.v2 import functional as TF

    generator = torch.Generator().manual_seed(0)
    weak = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    params = strong_params(range(24))
    assert params[:, augment.JITTER].bool().any() and params[:, augment.GRAY].bool().any()
    assert params[:, augment.BLUR].bool().any() and not params[:, augment.BLUR].bool().all()
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    ours = augment.strong_views(weak, params)
    for image, row, mine in zip(weak, params, ours):
        ref = image
        if row[augment.JITTER]:
            factors = row[augment.FACTORS].tolist()
            for which in row[augment.ORDER].long().tolist():
                ref = adjust[which](ref, factors[which])
        if row[augment.GRAY]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        if row[augment.BLUR]:
            sigma = float(row[augment.SIGMA])
            ref = TF.gaussian_blur(ref, [augment.BLUR_KERNEL] * 2, [sigma, sigma])
        assert (mine * 255 - ref.float()).abs().max() <= 8, row  # a few 8-bit levels, at most
        assert (mine * 255 - ref.float()).abs().mean() <= 3.0  # torchvision truncates to 8 bits after each step
    # One image's view does not depend on the batch it is in (workers, DDP ranks and batch sizes agree).
    alone = torch.cat([augment.strong_views(weak[i:i + 1], params[i:i + 1]) for i in range(len(weak))])
    assert torch.equal(alone, ours)
    # No jitter, grayscale or blur drawn: the strong view is the weak view.
    identity = torch.zeros(1, augment.STRONG_PARAMS)
    assert torch.equal(augment.strong_views(weak[:1], identity), weak[:1].float() / 255)
