"""Read a Pascal-VOC-format root: id lists, JPEG images and index masks.

Masks are read as raw index arrays: a palette PNG ("P") holds class indices in its pixels (the palette only
colours them for viewing), a grayscale PNG ("L", the SBD / SegmentationClassAug convention) holds them
directly; 255 is the ignore label. Converting a palette mask to RGB or L would destroy the indices, so any
other mode is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import PipelineError

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
AUG_MASK_DIR = "SegmentationClassAug"  # SBD masks (grayscale), used where SegmentationClass has none
LIST_DIR = "ImageSets/Segmentation"
MASK_MODES = ("P", "L")

# What PIL raises on files it cannot decode (truncated, corrupt or not an image at all).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


class VOCLayout:
    """Where the files of a VOC root live: JPEGImages, SegmentationClass(Aug), ImageSets/Segmentation."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def image_path(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        """The VOC mask if there is one, else the SBD-style one (which may not exist either)."""
        primary = self.root / MASK_DIR / f"{image_id}.png"
        if primary.is_file():
            return primary
        fallback = self.root / AUG_MASK_DIR / f"{image_id}.png"
        return fallback if fallback.is_file() else primary

    def list_path(self, name: str) -> Path:
        return self.root / LIST_DIR / f"{name}.txt"

    def image_ids(self) -> list[str]:
        """Every image in JPEGImages (sorted), for roots that ship no train_aug list."""
        folder = self.root / IMAGE_DIR
        if not folder.is_dir():
            raise PipelineError(f"{folder}: image folder not found")
        return sorted(p.stem for p in folder.glob("*.jpg"))

    def __repr__(self) -> str:
        return f"VOCLayout({str(self.root)!r})"


def _parse_id(token: str, path: Path, line_no: int) -> str:
    # Split files in the UniMatch/SemiVL style hold "JPEGImages/<id>.jpg SegmentationClass/<id>.png";
    # plain VOC lists hold the bare id. Both give the id; nothing else may name a path, so that an id never
    # reaches a file outside the dataset root.
    parts = PurePosixPath(token).parts
    if token.startswith("/") or ".." in parts:
        raise PipelineError(f"{path}: line {line_no}: id {token!r} would leave the dataset root")
    if len(parts) == 2 and parts[0] == IMAGE_DIR and parts[1].endswith(".jpg"):
        image_id = parts[1][: -len(".jpg")]
    elif len(parts) == 1:
        image_id = token[: -len(".jpg")] if token.endswith(".jpg") else token
    else:
        image_id = ""
    if not image_id or image_id == "." or "\\" in image_id:
        raise PipelineError(f"{path}: line {line_no}: {token!r} is not an image id")
    return image_id


def read_ids(path: str | Path) -> list[str]:
    """The ids of a list file, in file order; blank lines are skipped, a duplicate id is an error."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: id list not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read id list ({exc.__class__.__name__})") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        image_id = _parse_id(tokens[0], path, line_no)
        if image_id in seen:
            raise PipelineError(f"{path}: line {line_no}: duplicate id {image_id} (first on line {seen[image_id]})")
        seen[image_id] = line_no
        ids.append(image_id)
    return ids


@dataclass(frozen=True)
class VOCLists:
    """The id lists of a root. `pool` is what semi-supervised training may draw from: train_aug when the root
    ships it, else every JPEG that is not a val image."""

    train: list[str]
    val: list[str]
    train_aug: list[str] | None
    pool: list[str]


def read_lists(layout: VOCLayout) -> VOCLists:
    """Read train.txt, val.txt and (optional) train_aug.txt; empty lists and train/val overlap are errors."""
    train_path, val_path, aug_path = layout.list_path("train"), layout.list_path("val"), layout.list_path("train_aug")
    lists = {}
    for name, path in (("train", train_path), ("val", val_path), ("train_aug", aug_path)):
        if name == "train_aug" and not path.exists():
            continue
        lists[name] = read_ids(path)
        if not lists[name]:
            raise PipelineError(f"{path}: id list is empty")
    val = set(lists["val"])
    for name, path in (("train", train_path), ("train_aug", aug_path)):
        clash = next((i for i in lists.get(name, ()) if i in val), None)
        if clash is not None:
            raise PipelineError(f"{path}: id {clash} is also in {val_path.name} (train and val must not overlap)")
    train_aug = lists.get("train_aug")
    pool = train_aug if train_aug is not None else [i for i in layout.image_ids() if i not in val]
    return VOCLists(train=lists["train"], val=lists["val"], train_aug=train_aug, pool=pool)


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found")
    try:
        image = Image.open(path)
        image.load()
    except _DECODE_ERRORS as exc:
        raise PipelineError(f"{path}: corrupt or unreadable {what} ({_one_line(exc)})") from None
    return image


def read_image(path: str | Path) -> np.ndarray:
    """An image as uint8 RGB [H, W, 3] (grayscale or CMYK JPEGs are converted)."""
    image = _open(Path(path), "image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_mask(path: str | Path) -> np.ndarray:
    """A mask as its raw uint8 index array [H, W]: palette or grayscale PNG values, never converted."""
    path = Path(path)
    mask = _open(path, "mask")
    if mask.mode not in MASK_MODES:
        raise PipelineError(
            f"{path}: mask has PIL mode {mask.mode}; expected a palette (P) or grayscale (L) PNG of class indices"
        )
    return np.asarray(mask, dtype=np.uint8).copy()


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = 255) -> np.ndarray:
    """Raise if the mask holds a value that is neither a class index nor the ignore label; return the counts."""
    counts = np.bincount(mask.ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes:])
    bad = [int(v) + num_classes for v in bad if int(v) + num_classes != ignore_index]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5])
        raise PipelineError(
            f"{path}: mask values {shown} are outside 0..{num_classes - 1} and {ignore_index} (ignore)"
        )
    return counts


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__
