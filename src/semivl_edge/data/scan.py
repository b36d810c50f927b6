"""Check a VOC root file by file before anything trains on it, and fingerprint what was checked."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import PipelineError
from .classes import IGNORE_INDEX
from .voc import VOCLayout, VOCLists, check_mask_values, read_image, read_lists, read_mask


@dataclass(frozen=True)
class RootScan:
    lists: VOCLists
    images: int  # distinct images checked (decoded)
    masks: int  # masks checked (train and val ids)
    lists_fingerprint: str  # sha256 of the id lists
    content_fingerprint: str  # sha256 over the ids and the bytes of every checked image and mask


def lists_fingerprint(lists: VOCLists) -> str:
    digest = hashlib.sha256()
    for name, ids in (("train", lists.train), ("train_aug", lists.train_aug), ("val", lists.val)):
        if ids is not None:
            digest.update(f"{name}\n".encode() + "".join(f"{i}\n" for i in ids).encode())
    return digest.hexdigest()


def _check_one(layout: VOCLayout, image_id: str, needs_mask: bool, num_classes: int) -> bytes:
    """Decode the image (and check the mask); return a digest of the files' bytes."""
    image_path = layout.image_path(image_id)
    image = read_image(image_path)  # raises on a missing or corrupt file
    digest = hashlib.sha256(image_id.encode() + image_path.read_bytes())
    if needs_mask:
        mask_path = layout.mask_path(image_id)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise PipelineError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        check_mask_values(mask, num_classes, mask_path, IGNORE_INDEX)
        digest.update(mask_path.read_bytes())
    return digest.digest()


def scan_root(layout: VOCLayout, num_classes: int, workers: int = 1,
              progress: Callable[[Iterator, int], Iterator] | None = None) -> RootScan:
    """Every listed image decodes; every train and val image has a mask of its size with valid values.

    Images of the unlabeled pool need no mask (SBD masks are optional). Raises PipelineError naming the first
    bad file, in list order, so the message does not depend on `workers`.
    """
    lists = read_lists(layout)
    labeled = set(lists.train) | set(lists.val)
    order = list(dict.fromkeys(lists.train + lists.pool + lists.val))
    digest = hashlib.sha256(lists_fingerprint(lists).encode())
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes without the GIL
        results = pool.map(lambda i: _check_one(layout, i, i in labeled, num_classes), order)
        for item in progress(results, len(order)) if progress else results:
            digest.update(item)
    return RootScan(
        lists=lists,
        images=len(order),
        masks=len(labeled),
        lists_fingerprint=lists_fingerprint(lists),
        content_fingerprint=digest.hexdigest(),
    )
