"""Semi-supervised splits of a VOC root: which images are labeled, which are only seen unlabeled, which evaluate.

VOC protocol (UniMatch / SemiVL): the labeled images (92, 183, 366, 732 or 1464) are drawn from the high-quality
`train` list; every other image of `train_aug` is unlabeled; `val` is the evaluation set. `split.labeled` may
also be a fraction of the pool ("1/115": VOC's 92 of 10,582, kept as a ratio on a pool of another size) or
`all` (every pool image labeled, the supervised upper bound). With `split.cover_classes` the draw first labels
every class once (a dozen synthetic images drawn at random show only about 13 of the 20 classes; 92 VOC images
show all of them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import PipelineError
from .classes import IGNORE_INDEX
from .voc import VOCLists, check_mask_values, read_mask


@dataclass(frozen=True)
class Splits:
    labeled: list[str]
    unlabeled: list[str]
    val: list[str]


ALL = "all"


def labeled_count(value, pool_size: int, param: str = "split.labeled") -> int:
    """How many images `split.labeled` labels: a count, a fraction "a/b" of the pool (rounded, at least 1), or
    `all` (the whole pool)."""
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif value == ALL:
        return pool_size
    elif isinstance(value, str) and value.count("/") == 1 and all(p.strip().isdigit() for p in value.split("/")):
        numerator, denominator = (int(p) for p in value.split("/"))
        if denominator == 0 or numerator > denominator:
            raise PipelineError(f"{param} must be a fraction a/b with 0 < a <= b, got {value!r}")
        count = max(1, round(pool_size * numerator / denominator))
    else:
        raise PipelineError(f"{param} must be a count (92), a fraction of the pool (1/115) or all, got {value!r}")
    if count < 1:
        raise PipelineError(f"{param} must be at least 1, got {value!r}")
    return count


def draw_labeled(train: Sequence[str], count: int, seed: int,
                 shows: Mapping[str, AbstractSet[int]] | None = None) -> list[str]:
    """`count` ids of `train`, chosen by `seed` alone (not by list order); sorted.

    The draw is a prefix of one seeded permutation, so for a fixed seed a smaller labeled set is contained
    in every larger one (92 within 183 within 366 ...), as in the nested VOC protocol splits. With `shows` (each
    id's object classes) the permutation first puts the images that show every class (`covering_first`), so even
    a budget of a dozen images labels each class once, as VOC's 92 random images do.
    """
    if not 1 <= count <= len(train):
        raise ValueError(f"count must be in 1..{len(train)}, got {count}")
    candidates = sorted(train)
    order = [candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))]
    if shows is not None:
        order = covering_first(order, shows)
    return sorted(order[:count])


def covering_first(order: Sequence[str], shows: Mapping[str, AbstractSet[int]]) -> list[str]:
    """`order` with a class-covering head: greedily, the image that shows most classes not yet shown (the earliest
    in `order` on a tie), until no image adds one; then the others in their order. Greedy set cover, so the head
    is short: 13 synthetic images show all 20 classes where 13 drawn at random show 11-15."""
    rest, head, shown = list(order), [], set()
    while rest:
        gains = [len(shows[i] - shown) for i in rest]
        best = max(range(len(rest)), key=gains.__getitem__)
        if gains[best] == 0:
            break
        shown |= shows[rest[best]]
        head.append(rest.pop(best))
    return head + rest


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


def object_classes(mask_path: Path, num_classes: int) -> frozenset[int]:
    """The object classes (not background, not the 255 boundary) a mask shows; bad mask values are errors."""
    counts = check_mask_values(read_mask(mask_path), num_classes, mask_path, IGNORE_INDEX)
    return frozenset(int(c) for c in np.flatnonzero(counts[1:num_classes]) + 1)
