"""The embedded synthetic VOC set: deterministic bytes, exact VOC format, confusable class design."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semivl_edge.data.classes import load_classes
from semivl_edge.data.synthetic import APPEARANCE, SHAPES, TEXTURES, SyntheticConfig, generate, render
from semivl_edge.data.voc import VOCLayout, read_ids, read_lists, read_mask
from semivl_edge.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
CLASSES = load_classes(REPO / "data" / "classes" / "voc.yaml")
SMALL = SyntheticConfig(seed=0, train=6, train_aug=14, val=4, long_side=96)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "VOC2012"
    generate(root, CLASSES, SMALL, workers=2)
    return root


def test_same_seed_gives_identical_bytes_different_seed_differs(small_root, tmp_path):
    again = tmp_path / "again"
    generate(again, CLASSES, SMALL, workers=1)  # the process count must not matter either
    assert files_of(again) == files_of(small_root)
    other = tmp_path / "other"
    generate(other, CLASSES, SyntheticConfig(seed=1, train=6, train_aug=14, val=4, long_side=96))
    a, b = files_of(small_root), files_of(other)
    assert sum(a[k] != b.get(k) for k in a) > len(a) // 2


def test_growing_train_aug_keeps_existing_images_and_val(small_root, tmp_path):
    bigger = tmp_path / "bigger"
    generate(bigger, CLASSES, SyntheticConfig(seed=0, train=6, train_aug=20, val=4, long_side=96))
    old, new = files_of(small_root), files_of(bigger)
    shared = [k for k in old if k.startswith(("JPEGImages", "SegmentationClass"))]
    assert all(new[k] == old[k] for k in shared)


def test_lists_are_consistent(small_root):
    lists = read_lists(VOCLayout(small_root))
    assert len(lists.train) == 6 and len(lists.train_aug) == 14 and len(lists.val) == 4
    assert set(lists.train) <= set(lists.train_aug)
    assert not set(lists.train_aug) & set(lists.val)
    assert all(re.fullmatch(r"20(0[7-9]|1[0-2])_\d{6}", i) for i in lists.train_aug + lists.val)
    assert lists.train == sorted(lists.train)
    trainval = read_ids(small_root / "ImageSets" / "Segmentation" / "trainval.txt")
    assert trainval == sorted(lists.train + lists.val)


def test_masks_are_voc_format(small_root):
    layout = VOCLayout(small_root)
    lists = read_lists(layout)
    palette = Image.open(layout.mask_path(lists.val[0])).getpalette()
    assert palette[:6] == [0, 0, 0, 128, 0, 0] and palette[255 * 3: 256 * 3] == [224, 224, 192]
    for image_id in lists.train_aug + lists.val:
        path = layout.mask_path(image_id)
        labeled = image_id in lists.train or image_id in lists.val
        assert path.parent.name == ("SegmentationClass" if labeled else "SegmentationClassAug")
        assert Image.open(path).mode == ("P" if labeled else "L")
        mask = read_mask(path)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(21)) | {255}
        assert values - {0, 255}, f"{image_id}: no object"
        # VOC-style ignore outlines on the palette masks; SBD-style (none) on the grayscale ones.
        assert (255 in values) == labeled


def test_ignore_band_surrounds_objects():
    _, mask = render(CLASSES, seed=0, stream=0, index=3, long_side=320)
    band = mask == 255
    assert 0.005 < band.mean() < 0.2
    padded = np.pad(mask, 1, mode="edge")
    # No object pixel touches background directly: the band lies between them.
    for dy, dx in ((0, 1), (1, 0)):
        a, b = mask, padded[1 + dy: 1 + dy + mask.shape[0], 1 + dx: 1 + dx + mask.shape[1]]
        assert not np.any((a == 0) & (b > 0) & (b < 255))
        assert not np.any((b == 0) & (a > 0) & (a < 255))


def test_image_sizes_and_aspects_are_voc_like(small_root):
    layout = VOCLayout(small_root)
    aspects = set()
    for path in (small_root / "JPEGImages").glob("*.jpg"):
        image = Image.open(path)
        assert image.format == "JPEG" and image.mode == "RGB"
        w, h = image.size
        assert max(w, h) == 96
        aspects.add(round(w / h, 2))
        assert read_mask(layout.mask_path(path.stem)).shape == (h, w)
    assert aspects <= {1.33, 0.75, 1.5, 0.67, 1.0}
    assert len(aspects) >= 2


def test_every_class_appears_with_occlusion_and_scale_variation():
    seen = Counter()
    objects_per_image = []
    for index in range(80):
        _, mask = render(CLASSES, seed=0, stream=0, index=index, long_side=96, ignore_band=False)
        present = set(np.unique(mask).tolist()) - {0}
        seen.update(present)
        objects_per_image.append(len(present))
    assert set(seen) == set(range(1, 21))
    assert seen[15] == max(seen.values())  # person is the most frequent class, as in VOC
    assert max(objects_per_image) >= 2


def similar_colour(a, b) -> bool:
    """Overlapping colour ranges: close in saturation and value, and in hue unless both are greyish."""
    (ha, sa, va), (hb, sb, vb) = a, b
    hue_gap = min(abs(ha - hb), 360 - abs(ha - hb))
    return abs(sa - sb) <= 0.15 and abs(va - vb) <= 0.15 and (hue_gap <= 20 or max(sa, sb) < 0.2)


def test_appearance_table_is_confusable_by_design():
    assert set(APPEARANCE) == set(CLASSES.names[1:])
    for name, app in APPEARANCE.items():
        assert app.shape in SHAPES and app.texture in TEXTURES
        others = [a for n, a in APPEARANCE.items() if n != name]
        shared = [
            any(a.shape == app.shape for a in others),
            any(a.texture == app.texture for a in others),
            app.hue_jitter >= 90 or any(similar_colour(a.colour, app.colour) for a in others),
        ]
        # No single cue identifies a class: at least two of shape family, texture, colour recur elsewhere ...
        assert sum(shared) >= 2, f"{name}: too easy to recognise by one cue ({shared})"
    # ... while the combination does identify it.
    combos = Counter((a.shape, a.texture, round(a.colour[0] / 30), round(a.colour[2] * 3)) for a in APPEARANCE.values())
    assert max(combos.values()) == 1


def test_train_aug_smaller_than_train_is_an_error():
    with pytest.raises(PipelineError, match="data.synthetic.train_aug must be >= data.synthetic.train"):
        SyntheticConfig(seed=0, train=10, train_aug=5, val=4, long_side=96)
