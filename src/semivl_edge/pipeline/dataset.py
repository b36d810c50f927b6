"""Stage `dataset`: generate the embedded synthetic VOC root, or validate the user's Pascal VOC root.

Outputs: data/synthetic (the generated root, or only NOTE.txt when data.source is voc: DVC must never own or
delete a user's root), data/dataset.json (the manifest downstream stages read the root from) and
reports/metrics/dataset.json.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..atomic import atomic_dir, write_json, write_metrics
from ..data.classes import IGNORE_INDEX, ClassSpec, load_classes
from ..data.manifest import MANIFEST
from ..data.progress import progress_bar
from ..data.scan import RootScan, scan_root
from ..data.synthetic import SyntheticConfig, generate
from ..data.voc import VOCLayout
from ..errors import PipelineError
from ..params import Params

log = logging.getLogger(__name__)

SYNTHETIC_DIR = Path("data/synthetic")
METRICS = Path("reports/metrics/dataset.json")
SOURCES = ("synthetic", "voc")


def workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def synthetic_config(params: Params) -> SyntheticConfig:
    return SyntheticConfig(
        seed=params.get_int("data.synthetic.seed", min=0),
        train=params.get_int("data.synthetic.train", min=1),
        train_aug=params.get_int("data.synthetic.train_aug", min=1),
        val=params.get_int("data.synthetic.val", min=1),
        long_side=params.get_int("data.synthetic.long_side", min=32, max=4096),
    )


def build_synthetic(root: Path, classes: ClassSpec, config: SyntheticConfig) -> RootScan:
    if not _inside(root, SYNTHETIC_DIR):
        raise PipelineError(
            f"data.root: {root} must be inside {SYNTHETIC_DIR} when data.source is synthetic (the stage's DVC output)"
        )
    relative = root.resolve().relative_to(SYNTHETIC_DIR.resolve())
    images = config.train_aug + config.val
    log.info("generating the synthetic VOC root %s: %d images (train %d, train_aug %d, val %d), long side %d px",
             root, images, config.train, config.train_aug, config.val, config.long_side)
    with atomic_dir(SYNTHETIC_DIR) as tmp:  # replaces data/synthetic only when everything succeeded
        generate(tmp / relative, classes, config, workers=workers(), progress=progress_bar("generate"))
        # The same checks as for a user's root: the manifest is only written for a root that passed them.
        scan = scan_root(VOCLayout(tmp / relative), classes.num_classes, workers(), progress_bar("check"))
    return scan


def check_user_root(root: Path, classes: ClassSpec) -> RootScan:
    if _inside(root, SYNTHETIC_DIR):
        raise PipelineError(
            f"data.root: {root} is inside {SYNTHETIC_DIR}, which this stage replaces; keep the VOC root elsewhere"
        )
    if not root.is_dir():
        raise PipelineError(f"data.root: {root} is not a directory (expected a VOC root such as VOCdevkit/VOC2012)")
    log.info("checking the VOC root %s", root)
    scan = scan_root(VOCLayout(root), classes.num_classes, workers(), progress_bar("check"))
    with atomic_dir(SYNTHETIC_DIR) as tmp:
        (tmp / "NOTE.txt").write_text(
            "The synthetic dataset was not generated: data.source is voc.\n"
            f"The pipeline reads the Pascal VOC root {root} (data.root), which DVC does not track.\n"
        )
    return scan


def run(params: Params) -> None:
    # A failed run must not leave a manifest that describes data it did not check.
    for stale in (MANIFEST, METRICS):
        stale.unlink(missing_ok=True)

    source = params.get_str("data.source", choices=SOURCES)
    root = Path(params.get_str("data.root"))
    classes_file = params.get_str("classes.file")
    classes = load_classes(classes_file)
    manifest: dict = {"source": source, "root": str(root)}

    if source == "synthetic":
        config = synthetic_config(params)
        scan = build_synthetic(root, classes, config)
        manifest["synthetic"] = {
            "seed": config.seed, "train": config.train, "train_aug": config.train_aug,
            "val": config.val, "long_side": config.long_side,
        }
    else:
        scan = check_user_root(root, classes)

    lists = scan.lists
    counts = {
        "train": len(lists.train),
        "train_aug": len(lists.pool),  # the unlabeled pool: train_aug.txt, or all non-val JPEGs without it
        "val": len(lists.val),
        "images": scan.images,
        "masks": scan.masks,
    }
    manifest.update({
        "num_classes": classes.num_classes,
        "class_names": list(classes.names),
        "ignore_index": IGNORE_INDEX,
        "classes_file": classes_file,
        "counts": counts,
        "train_aug_list": lists.train_aug is not None,
        "lists_fingerprint": scan.lists_fingerprint,
        "content_fingerprint": scan.content_fingerprint,
    })
    write_metrics("dataset", {"num_classes": classes.num_classes, **counts})
    write_json(MANIFEST, manifest)  # last: its presence means the dataset is complete and checked
    log.info("dataset %s at %s: train %d, train_aug %d, val %d (%d images, %d masks checked)",
             source, root, counts["train"], counts["train_aug"], counts["val"], counts["images"], counts["masks"])
