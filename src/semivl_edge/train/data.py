"""Training data: labeled crops, unlabeled weak/strong views and a resumable, seeded sample stream.

The sample stream is a pure function of (seed, stream, position): the order is a seeded permutation per pass
over the list, and every sample gets its own augmentation seed from its global position. Hence
- a run resumed at step s sees exactly the batches an uninterrupted run sees from step s on (no loader state
  to save),
- the number of data workers does not change anything,
- with DDP, rank r takes its slice of every global batch, so the global batch sequence is the same for 1 or N
  processes (`train.batch_size` is the global batch).

With `train.workers: 0` (the default) the data runs in the training process: each image and mask is decoded once
and kept in memory (about 0.5 GB for the embedded default; VOC's train_aug would take about 8 GB), and the strong
views of a whole batch are made at once (augment.strong_views). On a 2-core machine worker processes only compete
with the compute threads. With workers (a GPU machine) every worker decodes per sample and keeps nothing.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms.v2 import functional as TF

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


class DecodedFiles:
    """Decoded images and masks by path; with `keep`, each file is decoded once and kept (read-only use)."""

    def __init__(self, keep: bool):
        self.keep = keep
        self.store: dict[tuple[Path, str], np.ndarray] = {}

    def get(self, path: Path, kind: str, decode) -> np.ndarray:
        if not self.keep:
            return decode(path)
        key = (path, kind)
        if key not in self.store:
            self.store[key] = decode(path)
        return self.store[key]


class LabeledCrops(Dataset):
    """Item (index, seed) -> {"image": float [3, c, c] normalised, "mask": int64 [c, c] with 255 = ignore}."""

    def __init__(self, layout: VOCLayout, ids: Sequence[str], spec: CropSpec, num_classes: int,
                 keep_decoded: bool = False):
        self.layout, self.ids, self.spec, self.num_classes = layout, list(ids), spec, num_classes
        self.geometry = augment.geometric_transform(spec.crop_size, spec.base_size, spec.scale_range)
        self.files = DecodedFiles(keep_decoded)

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, samples: list[dict]) -> dict:
        return default_collate(samples)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image_id = self.ids[index]
        image = self.files.get(self.layout.image_path(image_id), "image", read_image)
        mask_path = self.layout.mask_path(image_id)
        mask = self.files.get(mask_path, "mask", lambda path: check_mask(read_mask(path), self.num_classes, path))
        if mask.shape != image.shape[:2]:
            raise PipelineError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
        with augment.seeded(seed):
            image_t, mask_t = self.geometry(augment.to_image(image), augment.to_mask(mask))
        return {
            "image": normalize(image_t, self.spec.pixel_mean, self.spec.pixel_std),
            "mask": mask_t.as_subclass(torch.Tensor).long(),
        }


class UnlabeledCrops(Dataset):
    """Item (index, seed) -> {"image": float [3, c, c] normalised, "ignore": int64 [c, c] (255 = padding), "box":
    a CutMix box}: the labeled crops' geometry without a mask (the distillation's unlabeled images, which the teacher
    labels)."""

    def __init__(self, layout: VOCLayout, ids: Sequence[str], spec: CropSpec, cutmix_prob: float,
                 keep_decoded: bool = False):
        self.layout, self.ids, self.spec, self.cutmix_prob = layout, list(ids), spec, cutmix_prob
        self.geometry = augment.geometric_transform(spec.crop_size, spec.base_size, spec.scale_range)
        self.files = DecodedFiles(keep_decoded)

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, samples: list[dict]) -> dict:
        return default_collate(samples)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image = self.files.get(self.layout.image_path(self.ids[index]), "image", read_image)
        with augment.seeded(seed):
            image_t, ignore = self.geometry(augment.to_image(image), augment.to_mask(np.zeros(image.shape[:2], np.uint8)))
            box = augment.sample_cutmix_box(self.spec.crop_size, self.cutmix_prob)
        return {"image": normalize(image_t, self.spec.pixel_mean, self.spec.pixel_std),
                "ignore": ignore.as_subclass(torch.Tensor).long(), "box": box}


class UnlabeledViews(Dataset):
    """Item (index, seed) -> weak view (uint8), two strong views' parameters, ignore map (255 = padding), two CutMix
    boxes, and the true mask cropped like the weak view ("truth": all 255 where the image has no mask).

    `collate` turns a list of items into the training batch: "weak", "strong1", "strong2" normalised float
    [B, 3, c, c] (the strong views made from the weak ones, batched), and the maps stacked.

    The truth is for the target audit (train/audit.py) only; no loss reads it. Mask values outside the classes
    count as unknown (255) there rather than stopping training over a diagnostic.
    """

    def __init__(self, layout: VOCLayout, ids: Sequence[str], spec: CropSpec, cutmix_prob: float, num_classes: int,
                 keep_decoded: bool = False):
        self.layout, self.ids, self.spec, self.cutmix_prob = layout, list(ids), spec, cutmix_prob
        self.num_classes = num_classes
        self.geometry = augment.geometric_transform(spec.crop_size, spec.base_size, spec.scale_range)
        self.files = DecodedFiles(keep_decoded)

    def __len__(self) -> int:
        return len(self.ids)

    def _truth(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        mask = read_mask(path)
        return np.where(mask < self.num_classes, mask, IGNORE_INDEX).astype(np.uint8)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        image_id = self.ids[index]
        image = self.files.get(self.layout.image_path(image_id), "image", read_image)
        blank = np.zeros(image.shape[:2], np.uint8)
        truth = self.files.get(self.layout.mask_path(image_id), "truth", self._truth)
        if truth is None or truth.shape != image.shape[:2]:
            truth = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        with augment.seeded(seed):
            # One call: the image, its padding map and its truth get the same geometry (and the same random draws
            # as without the truth, so the audit does not change training).
            weak, ignore, truth = self.geometry(augment.to_image(image), augment.to_mask(blank), augment.to_mask(truth))
            strong1 = augment.sample_strong_params()
            box1 = augment.sample_cutmix_box(self.spec.crop_size, self.cutmix_prob)
            strong2 = augment.sample_strong_params()
            box2 = augment.sample_cutmix_box(self.spec.crop_size, self.cutmix_prob)
        return {
            "weak": weak.as_subclass(torch.Tensor),
            "strong1": strong1,
            "strong2": strong2,
            "ignore": ignore.as_subclass(torch.Tensor).long(),
            "box1": box1,
            "box2": box2,
            "truth": truth.as_subclass(torch.Tensor).long(),
        }

    def collate(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        norm = lambda x: TF.normalize(x, list(self.spec.pixel_mean), list(self.spec.pixel_std))  # noqa: E731
        weak = batch["weak"]
        batch["strong1"] = norm(augment.strong_views(weak, batch["strong1"]))
        batch["strong2"] = norm(augment.strong_views(weak, batch["strong2"]))
        batch["weak"] = normalize(weak, self.spec.pixel_mean, self.spec.pixel_std)
        return batch


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


def make_loader(dataset: LabeledCrops | UnlabeledViews, sampler: StepBatchSampler, workers: int, seed: int,
                pin_memory: bool) -> DataLoader:
    # An explicit generator keeps the loader from drawing its base seed from the global RNG (the training
    # randomness), so creating a loader never shifts dropout masks.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      collate_fn=dataset.collate,
                      worker_init_fn=seed_worker, generator=generator, persistent_workers=False,
                      prefetch_factor=2 if workers > 0 else None)
