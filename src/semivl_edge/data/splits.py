"""Semi-supervised splits of a VOC root: which images are labeled, which are only seen unlabeled, which evaluate.

VOC protocol (UniMatch / SemiVL): the labeled images (92, 183, 366, 732 or 1464) are drawn from the high-quality
`train` list; every other image of `train_aug` is unlabeled; `val` is the evaluation set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .classes import IGNORE_INDEX
from .voc import VOCLists, check_mask_values, read_mask


@dataclass(frozen=True)
class Splits:
    labeled: list[str]
    unlabeled: list[str]
    val: list[str]


def draw_labeled(train: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` ids of `train`, chosen by `seed` alone (not by list order); sorted.

    The draw is a prefix of one seeded permutation, so for a fixed seed a smaller labeled set is contained
    in every larger one (92 within 183 within 366 ...), as in the nested VOC protocol splits.
    """
    if not 1 <= count <= len(train):
        raise ValueError(f"count must be in 1..{len(train)}, got {count}")
    candidates = sorted(train)
    order = np.random.default_rng(seed).permutation(len(candidates))
    return sorted(candidates[i] for i in order[:count])


def make_splits(lists: VOCLists, labeled: Iterable[str]) -> Splits:
    """Unlabeled = the pool (train_aug, or all non-val images) minus the labeled images."""
    labeled = sorted(labeled)
    chosen = set(labeled)
    unlabeled = sorted(i for i in lists.pool if i not in chosen)
    return Splits(labeled=labeled, unlabeled=unlabeled, val=sorted(lists.val))


def pixel_share(mask_paths: Sequence[Path], num_classes: int,
                progress: Callable[[Iterator, int], Iterator] | None = None) -> np.ndarray:
    """Fraction of the annotated (non-ignore) pixels that belong to each class, over all the masks."""
    counts = np.zeros(256, np.int64)
    paths: Iterable[Path] = progress(iter(mask_paths), len(mask_paths)) if progress else mask_paths
    for path in paths:
        counts += check_mask_values(read_mask(path), num_classes, path, IGNORE_INDEX)
    per_class = counts[:num_classes].astype(np.float64)
    total = per_class.sum()
    return per_class / total if total else per_class
