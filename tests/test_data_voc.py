"""The VOC reader: lists, images and raw index masks of a VOC-format root, and the root check."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from conftest import AUG_ONLY, TRAIN, VAL, make_mask

from semivl_edge.data.scan import scan_root
from semivl_edge.data.voc import VOCLayout, read_ids, read_image, read_lists, read_mask
from semivl_edge.errors import PipelineError


def test_layout_paths_and_mask_fallback(voc_root):
    layout = VOCLayout(voc_root)
    assert layout.image_path("2007_000032") == voc_root / "JPEGImages" / "2007_000032.jpg"
    assert layout.mask_path("2007_000032") == voc_root / "SegmentationClass" / "2007_000032.png"
    assert layout.mask_path("2010_000005") == voc_root / "SegmentationClassAug" / "2010_000005.png"
    assert layout.list_path("train_aug") == voc_root / "ImageSets" / "Segmentation" / "train_aug.txt"


def test_read_ids_plain_and_split_file_formats(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("2007_000032\n\n  2007_000039  \n")
    assert read_ids(plain) == ["2007_000032", "2007_000039"]
    unimatch = tmp_path / "labeled.txt"  # the UniMatch / SemiVL split format
    unimatch.write_text("JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png\n")
    assert read_ids(unimatch) == ["2007_000032"]


def test_read_ids_rejects_duplicates_and_missing_files(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("2007_000032\n2007_000039\n2007_000032\n")
    with pytest.raises(PipelineError, match=r"train\.txt: line 3: duplicate id 2007_000032"):
        read_ids(path)
    with pytest.raises(PipelineError, match="missing.txt: id list not found"):
        read_ids(tmp_path / "missing.txt")


def test_read_image_portrait_and_landscape(voc_root):
    layout = VOCLayout(voc_root)
    for image_id, (w, h) in {**TRAIN, **VAL}.items():
        image = read_image(layout.image_path(image_id))
        assert image.dtype == np.uint8 and image.shape == (h, w, 3)


def test_read_image_converts_grayscale_jpeg(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.new("L", (20, 10), 128).save(path)
    assert read_image(path).shape == (10, 20, 3)


def test_read_mask_keeps_palette_indices(voc_root):
    layout = VOCLayout(voc_root)
    w, h = TRAIN["2007_000039"]
    mask = read_mask(layout.mask_path("2007_000039"))
    assert Image.open(layout.mask_path("2007_000039")).mode == "P"
    np.testing.assert_array_equal(mask, make_mask(w, h, 2))  # indices, not palette colours or luminance
    assert set(np.unique(mask)) == {0, 2, 15, 255}


def test_read_mask_reads_grayscale_sbd_masks(voc_root):
    path = VOCLayout(voc_root).mask_path("2010_000005")
    assert Image.open(path).mode == "L"
    w, h = AUG_ONLY["2010_000005"]
    np.testing.assert_array_equal(read_mask(path), make_mask(w, h, 6))


def test_rgb_mask_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (8, 8), (128, 0, 0)).save(path)
    with pytest.raises(PipelineError, match=r"rgb\.png: mask has PIL mode RGB"):
        read_mask(path)


def test_corrupt_and_missing_images_are_errors_naming_the_file(tmp_path):
    path = tmp_path / "2007_000032.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(PipelineError, match=r"2007_000032\.jpg: corrupt or unreadable image") as err:
        read_image(path)
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match=r"nothing\.png: mask not found"):
        read_mask(tmp_path / "nothing.png")


def test_truncated_jpeg_is_an_error(voc_root):
    path = VOCLayout(voc_root).image_path("2007_000032")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PipelineError, match="2007_000032.jpg: corrupt or unreadable image"):
        read_image(path)


def test_read_lists_pool_is_train_aug_or_all_non_val_images(voc_root):
    lists = read_lists(VOCLayout(voc_root))
    assert lists.train == list(TRAIN) and lists.val == list(VAL)
    assert lists.pool == lists.train_aug == list(TRAIN) + list(AUG_ONLY)
    (voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    lists = read_lists(VOCLayout(voc_root))
    assert lists.train_aug is None
    assert lists.pool == sorted({**TRAIN, **AUG_ONLY})


def test_read_lists_rejects_train_val_overlap(voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000032\n")
    with pytest.raises(PipelineError, match="id 2007_000032 is also in val.txt"):
        read_lists(VOCLayout(voc_root))


def test_scan_counts_and_fingerprint(voc_root):
    scan = scan_root(VOCLayout(voc_root), num_classes=21, workers=2)
    assert scan.images == len(TRAIN) + len(VAL) + len(AUG_ONLY)
    assert scan.masks == len(TRAIN) + len(VAL)
    again = scan_root(VOCLayout(voc_root), num_classes=21, workers=1)
    assert again.content_fingerprint == scan.content_fingerprint
    write = voc_root / "SegmentationClass" / "2007_000033.png"
    mask = read_mask(write)
    mask[0, 0] = 3
    img = Image.fromarray(mask)
    img.putpalette(Image.open(write).getpalette())
    img.save(write)
    changed = scan_root(VOCLayout(voc_root), num_classes=21)
    assert changed.content_fingerprint != scan.content_fingerprint
    assert changed.lists_fingerprint == scan.lists_fingerprint


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "JPEGImages" / "2010_000005.jpg").unlink(), r"2010_000005\.jpg: image not found"),
        (lambda r: (r / "SegmentationClass" / "2007_000039.png").unlink(), r"2007_000039\.png: mask not found"),
        (lambda r: Image.fromarray(np.full((30, 40), 21, np.uint8)).save(r / "SegmentationClass" / "2007_000033.png"),
         r"2007_000033\.png: mask values 21 are outside 0\.\.20 and 255"),
        (lambda r: Image.fromarray(np.zeros((10, 10), np.uint8)).save(r / "SegmentationClass" / "2007_000032.png"),
         r"2007_000032\.png: mask is 10x10 but image 2007_000032\.jpg is 40x30"),
    ],
    ids=["missing-jpeg", "missing-mask", "bad-value", "size-mismatch"],
)
def test_scan_stops_on_the_bad_file(voc_root, damage, message):
    damage(voc_root)
    with pytest.raises(PipelineError, match=message):
        scan_root(VOCLayout(voc_root), num_classes=21, workers=2)
