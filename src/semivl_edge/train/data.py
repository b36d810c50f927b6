"""Training data: labeled crops, unlabeled weak/strong views and a resumable, seeded sample stream.

The sample stream is a pure function of (seed, stream, position): the order is a seeded permutation per pass
over the list, and every sample gets its own augmentation seed from its global position. Hence
- a run resumed at step s sees exactly the batches an uninterrupted run sees from step s on (no loader state
  to save),
- the number of data workers does not change anything,
- with DDP, rank r takes its slice of every global batch, so the global batch sequence is the same for 1 or N
  processes (`train.batch_size` is the global batch).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..basics import normalize
from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout, read_image, read_mask
from ..errors import PipelineError
from . import augment

STREAM_LABELED, STREAM_UNLABELED, STREAM_PARTNER = 0, 1, 2


@dataclass(frozen=True)
class CropSpec:
    """How training crops are made and normalised."""

    crop_size: int
    base_size: int
    scale_range: tuple[float, float]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]


def check_mask(mask: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    invalid = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if invalid.any():
        raise PipelineError(
            f"{path}: mask value {int(mask[invalid][0])} is outside 0..{num_classes - 1} and {IGNORE_INDEX} (ignore)"
        )
    return mask


class LabeledCrops(Dataset):
    """Item (index, seed) -> {"image": float [3, c, c] normalised, "mask": int64 [c, c] with 255 = ignore}."""

    def __init__(self, layout: VOCLayout, ids: Sequence[str], spec: CropSpec, num_classes: int):
        self.layout, self.ids, self.spec, self.num_classes = layout, list(ids), spec, num_classes
        self.geometry = augment.geometric_transform(spec.crop_size, spec.base_size, spec.scale_range)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image_id = self.ids[index]
        image = read_image(self.layout.image_path(image_id))
        mask_path = self.layout.mask_path(image_id)
        mask = check_mask(read_mask(mask_path), self.num_classes, mask_path)
        if mask.shape != image.shape[:2]:
            raise PipelineError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
        with augment.seeded(seed):
            image_t, mask_t = self.geometry(augment.to_image(image), augment.to_mask(mask))
        return {
            "image": normalize(image_t, self.spec.pixel_mean, self.spec.pixel_std),
            "mask": mask_t.as_subclass(torch.Tensor).long(),
        }


class UnlabeledViews(Dataset):
    """Item (index, seed) -> weak view, two strong views, ignore map (255 = padding), two CutMix boxes, and the
    true mask cropped like the weak view ("truth": all 255 where the image has no mask).

    The truth is for the target audit (train/audit.py) only; no loss reads it. Mask values outside the classes
    count as unknown (255) there rather than stopping training over a diagnostic.
    """

    def __init__(self, layout: VOCLayout, ids: Sequence[str], spec: CropSpec, cutmix_prob: float, num_classes: int):
        self.layout, self.ids, self.spec, self.cutmix_prob = layout, list(ids), spec, cutmix_prob
        self.num_classes = num_classes
        self.geometry = augment.geometric_transform(spec.crop_size, spec.base_size, spec.scale_range)
        self.strong = augment.strong_photometric_transform()

    def __len__(self) -> int:
        return len(self.ids)

    def _truth(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        path = self.layout.mask_path(image_id)
        mask = read_mask(path) if path.is_file() else None
        if mask is None or mask.shape != shape:
            return np.full(shape, IGNORE_INDEX, np.uint8)
        return np.where(mask < self.num_classes, mask, IGNORE_INDEX).astype(np.uint8)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image = read_image(self.layout.image_path(self.ids[index]))
        blank = np.zeros(image.shape[:2], np.uint8)
        truth = self._truth(self.ids[index], image.shape[:2])
        norm = lambda x: normalize(x, self.spec.pixel_mean, self.spec.pixel_std)  # noqa: E731
        with augment.seeded(seed):
            # One call: the image, its padding map and its truth get the same geometry (and the same random draws
            # as without the truth, so the audit does not change training).
            weak, ignore, truth = self.geometry(augment.to_image(image), augment.to_mask(blank), augment.to_mask(truth))
            strong1 = self.strong(weak)
            box1 = augment.sample_cutmix_box(self.spec.crop_size, self.cutmix_prob)
            strong2 = self.strong(weak)
            box2 = augment.sample_cutmix_box(self.spec.crop_size, self.cutmix_prob)
        return {
            "weak": norm(weak),
            "strong1": norm(strong1),
            "strong2": norm(strong2),
            "ignore": ignore.as_subclass(torch.Tensor).long(),
            "box1": box1,
            "box2": box2,
            "truth": truth.as_subclass(torch.Tensor).long(),
        }


def count_masks(layout: VOCLayout, ids: Sequence[str]) -> int:
    """How many of `ids` have a mask file (the unlabeled images' masks feed the target audit only)."""
    return sum(layout.mask_path(i).is_file() for i in ids)


def sample_seed(seed: int, stream: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, stream, position]).generate_state(1, np.uint32)[0])


class StepBatchSampler(Sampler):
    """This rank's share of the global batches of steps [start_step, end_step) of one sample stream.

    Yields lists of (dataset index, augmentation seed).
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, stream: int,
                 start_step: int, end_step: int, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise PipelineError("a training id list is empty")
        if global_batch % world_size:
            raise PipelineError(f"train.batch_size ({global_batch}) must be divisible by the number of processes ({world_size})")
        self.num_items, self.global_batch, self.seed, self.stream = num_items, global_batch, seed, stream
        self.start_step, self.end_step = start_step, end_step
        self.local_batch = global_batch // world_size
        self.offset = rank * self.local_batch
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.stream, epoch, 7]))
            self._order = (epoch, rng.permutation(self.num_items))
        return self._order[1]

    def batch(self, step: int) -> list[tuple[int, int]]:
        items = []
        for j in range(self.local_batch):
            position = step * self.global_batch + self.offset + j
            epoch, slot = divmod(position, self.num_items)
            items.append((int(self.order(epoch)[slot]), sample_seed(self.seed, self.stream, position)))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


def seed_worker(worker_id: int) -> None:
    """numpy / random in a worker follow torch's per-worker seed (the augmentation itself is seeded per sample)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, sampler: StepBatchSampler, workers: int, seed: int, pin_memory: bool) -> DataLoader:
    # An explicit generator keeps the loader from drawing its base seed from the global RNG (the training
    # randomness), so creating a loader never shifts dropout masks.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=seed_worker, generator=generator, persistent_workers=False,
                      prefetch_factor=2 if workers > 0 else None)
