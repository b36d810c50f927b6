"""Stage `splits`: data/splits/{labeled,unlabeled,val}.txt and reports/metrics/splits.json.

The root comes from data/dataset.json (stage `dataset`). Labeled ids are drawn from the `train` list by
split.seed, every class first with split.cover_classes (or read from split.labeled_file); unlabeled = the
train_aug pool minus the labeled ids.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..atomic import atomic_dir, write_metrics
from ..data.manifest import MANIFEST, read_manifest
from ..data.progress import progress_bar
from ..data.splits import ALL, Splits, draw_labeled, labeled_count, make_splits, object_classes, pixel_share
from ..data.voc import VOCLayout, VOCLists, read_ids, read_lists
from ..errors import PipelineError
from ..params import Params

log = logging.getLogger(__name__)

SPLITS_DIR = Path("data/splits")
METRICS = Path("reports/metrics/splits.json")


def choose_labeled(params: Params, lists: VOCLists, layout: VOCLayout, num_classes: int) -> list[str]:
    labeled_file = params.get_optional_str("split.labeled_file")
    value = params.raw("split.labeled")
    seed = params.get_int("split.seed", min=0)
    train_path = layout.list_path("train")
    if labeled_file is not None:
        ids = read_ids(labeled_file)  # duplicates and a missing file are errors there
        if not ids:
            raise PipelineError(f"split.labeled_file: {labeled_file} holds no ids")
        pool = set(lists.train)
        outside = next((i for i in ids if i not in pool), None)
        if outside is not None:
            raise PipelineError(
                f"split.labeled_file: id {outside} in {labeled_file} is not in the labeled pool {train_path}"
            )
        log.info("split.labeled_file gives %d labeled ids; split.labeled (%s) is not used", len(ids), value)
        return ids
    count = labeled_count(value, len(lists.pool), param=f"{params.source}: split.labeled")
    if value == ALL:
        return sorted(lists.pool)  # the upper bound: every pool image with its (SBD-style) mask
    if count > len(lists.train):
        raise PipelineError(
            f"{params.source}: split.labeled: {count} is larger than the labeled pool ({len(lists.train)} ids in "
            f"{train_path}; `all` labels the whole pool)"
        )
    shows = None
    if params.get_bool("split.cover_classes"):
        masks = progress_bar("train masks: classes shown")(iter(lists.train), len(lists.train))
        shows = {i: object_classes(layout.mask_path(i), num_classes) for i in masks}
    return draw_labeled(lists.train, count, seed, shows)


def split_metrics(splits: Splits, layout: VOCLayout, class_names: list[str]) -> dict:
    """Counts, and how the labeled set's class pixel share compares with val's (small labeled sets miss classes)."""
    shares = {}
    for name, ids in (("labeled", splits.labeled), ("val", splits.val)):
        share = pixel_share([layout.mask_path(i) for i in ids], len(class_names), progress_bar(f"{name} masks"))
        shares[name] = {cls: round(float(s), 6) for cls, s in zip(class_names, share)}
    return {
        "labeled": len(splits.labeled),
        "unlabeled": len(splits.unlabeled),
        "val": len(splits.val),
        "labeled_classes_present": sum(1 for s in shares["labeled"].values() if s > 0),
        "class_pixel_share": shares,
    }


def run(params: Params) -> None:
    # A failed run must not leave split files that look valid.
    shutil.rmtree(SPLITS_DIR, ignore_errors=True)
    METRICS.unlink(missing_ok=True)

    manifest = read_manifest()
    layout = VOCLayout(manifest["root"])
    if not layout.root.is_dir():
        raise PipelineError(f"{MANIFEST}: root {layout.root} is not a directory (re-run the `dataset` stage)")
    lists = read_lists(layout)
    class_names = list(manifest["class_names"])
    labeled = choose_labeled(params, lists, layout, len(class_names))
    splits = make_splits(lists, labeled)
    if not splits.unlabeled:
        log.warning("no unlabeled images: every pool image is labeled")
    metrics = split_metrics(splits, layout, class_names)

    with atomic_dir(SPLITS_DIR) as tmp:
        for name in ("labeled", "unlabeled", "val"):
            (tmp / f"{name}.txt").write_text("".join(f"{i}\n" for i in getattr(splits, name)))
    write_metrics("splits", metrics)
    log.info("splits: %d labeled (showing %d of %d classes), %d unlabeled, %d val", metrics["labeled"],
             metrics["labeled_classes_present"], len(class_names), metrics["unlabeled"], metrics["val"])
