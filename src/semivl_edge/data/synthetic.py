"""The embedded default dataset: a deterministic, offline stand-in for Pascal VOC in the exact VOC layout.

Every image is drawn by its own random generator seeded from (seed, stream, index), so the same parameters give
byte-identical files, and growing one list leaves the images already in it (and the other lists) unchanged.

What makes it a useful semi-supervised benchmark: the 20 object classes are built from a few shape families,
colour ranges and textures that they SHARE, so only the combination (shape + colour + texture, plus the typical
proportions) tells two classes apart - e.g. cow, sheep, cat, dog and horse are all quadrupeds; car, sofa and
bicycle are all red; chair, dog and dining table are all brown. Objects vary in scale, overlap each other and sit
on cluttered, textured backgrounds with distractor shapes in class-like colours. A handful of labeled images
does not pin down every combination; the unlabeled pool does.

Layout written: JPEGImages/<id>.jpg (quality 90), SegmentationClass/<id>.png for train and val (palette PNGs
with the VOC palette and 255 outlines), SegmentationClassAug/<id>.png for the train_aug-only images (grayscale,
no outlines, like the SBD masks), ImageSets/Segmentation/{train,train_aug,val,trainval}.txt.

The appearance of each class is the table APPEARANCE below: edit it to make the task easier or harder.
"""
from __future__ import annotations

import colorsys
import functools
import io
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import PipelineError
from .classes import IGNORE_INDEX, ClassSpec
from .voc import AUG_MASK_DIR, IMAGE_DIR, LIST_DIR, MASK_DIR

JPEG_QUALITY = 90
# VOC image proportions (width:height) and how often they occur; the long side is data.synthetic.long_side.
ASPECTS = {(4, 3): 0.45, (3, 4): 0.25, (3, 2): 0.15, (2, 3): 0.10, (1, 1): 0.05}
# Objects per image and their probabilities; later objects can repeat the first class (herds, crowds).
OBJECT_COUNTS = {1: 0.40, 2: 0.30, 3: 0.20, 4: 0.10}
REPEAT_FIRST_CLASS = 0.35
STREAM_TRAIN, STREAM_VAL = 0, 1  # independent image streams: the val set never depends on the train sizes
STREAM_WEB = 2  # the captioned images that pretrain the embedded CLIP (data/captions.py): never train or val images


@dataclass(frozen=True)
class Appearance:
    shape: str  # shape family (see SHAPES); shared by several classes
    aspect: float  # typical width / height of the object
    colour: tuple[float, float, float]  # main colour, HSV: hue in degrees, saturation and value in 0..1
    colour2: tuple[float, float, float]  # the texture's second colour
    texture: str  # see TEXTURES; mixes colour and colour2
    weight: float = 1.0  # how often the class is drawn (person is the most frequent VOC class)
    hue_jitter: float = 12.0  # per-object hue spread in degrees (person: any clothing colour)


# fmt: off
# The class table. Shared attributes are intentional: read down a column to see who is confusable with whom.
#                               shape       aspect  colour (h, s, v)   colour2 (h, s, v)  texture    weight, hue_jitter
APPEARANCE: dict[str, Appearance] = {
    "aeroplane":    Appearance("winged",     2.20, (210, 0.12, 0.82), (210, 0.35, 0.45), "flat"),
    "bicycle":      Appearance("frame",      1.60, (  0, 0.72, 0.70), (  0, 0.10, 0.15), "flat"),
    "bird":         Appearance("winged",     1.30, ( 30, 0.50, 0.50), ( 35, 0.25, 0.80), "grain"),
    "boat":         Appearance("hull",       1.20, (  0, 0.05, 0.90), (220, 0.60, 0.55), "stripes"),
    "bottle":       Appearance("upright",    0.38, (120, 0.60, 0.50), (120, 0.30, 0.85), "flat"),
    "bus":          Appearance("wheeled",    2.00, ( 48, 0.80, 0.85), (220, 0.30, 0.25), "checker"),
    "car":          Appearance("wheeled",    1.80, (  0, 0.72, 0.70), (  0, 0.10, 0.20), "flat"),
    "cat":          Appearance("quadruped",  1.30, ( 30, 0.15, 0.55), ( 30, 0.10, 0.25), "stripes"),
    "chair":        Appearance("furniture",  0.80, ( 30, 0.55, 0.50), ( 30, 0.60, 0.30), "grain"),
    "cow":          Appearance("quadruped",  1.60, (  0, 0.05, 0.90), (  0, 0.00, 0.12), "spots"),
    "dining table": Appearance("furniture",  1.90, ( 30, 0.50, 0.55), ( 30, 0.60, 0.30), "stripes"),
    "dog":          Appearance("quadruped",  1.40, ( 30, 0.55, 0.50), ( 30, 0.40, 0.80), "flat"),
    "horse":        Appearance("quadruped",  1.50, ( 20, 0.60, 0.35), ( 20, 0.50, 0.20), "grain"),
    "motorbike":    Appearance("frame",      1.50, (  0, 0.00, 0.20), (210, 0.10, 0.75), "checker"),
    "person":       Appearance("upright",    0.42, ( 25, 0.45, 0.75), ( 25, 0.35, 0.85), "grain", 3.0, 180.0),
    "potted plant": Appearance("upright",    0.75, (110, 0.60, 0.45), (110, 0.70, 0.20), "spots"),
    "sheep":        Appearance("quadruped",  1.40, ( 45, 0.12, 0.85), ( 45, 0.05, 0.60), "grain"),
    "sofa":         Appearance("furniture",  2.10, (  0, 0.60, 0.55), (  0, 0.60, 0.35), "grain"),
    "train":        Appearance("wheeled",    3.00, (220, 0.60, 0.50), ( 50, 0.80, 0.85), "stripes"),
    "tv/monitor":   Appearance("panel",      1.30, (  0, 0.00, 0.12), (220, 0.40, 0.60), "flat"),
}
# fmt: on


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int
    train: int  # high-quality `train` list: the labeled pool
    train_aug: int  # `train_aug` list (a superset of `train`): labeled + unlabeled pool
    val: int
    long_side: int

    def __post_init__(self):
        if self.train_aug < self.train:
            raise PipelineError(
                f"data.synthetic.train_aug must be >= data.synthetic.train ({self.train}), got {self.train_aug}"
            )


# ---------------------------------------------------------------------------------------------------------------
# Shape families: each draws a silhouette (value 255) into a w x h canvas, side view, facing right.
# ---------------------------------------------------------------------------------------------------------------
def _line(draw: ImageDraw.ImageDraw, points, width: float) -> None:
    draw.line([tuple(p) for p in points], fill=255, width=max(1, int(round(width))), joint="curve")


def _winged(draw, w, h, rng):
    draw.ellipse([0, 0.36 * h, w, 0.64 * h], fill=255)  # fuselage / body
    cx = w * rng.uniform(0.40, 0.58)
    sweep = w * rng.uniform(0.02, 0.15)
    draw.polygon([(cx - 0.14 * w, 0.5 * h), (cx + 0.10 * w, 0.5 * h), (cx - sweep, 0.0)], fill=255)
    draw.polygon([(cx - 0.14 * w, 0.5 * h), (cx + 0.10 * w, 0.5 * h), (cx - sweep, h)], fill=255)
    draw.polygon([(0, 0.5 * h), (0.14 * w, 0.5 * h), (0.02 * w, 0.18 * h)], fill=255)  # tail


def _quadruped(draw, w, h, rng):
    body_top = h * rng.uniform(0.15, 0.25)
    draw.ellipse([0.08 * w, body_top, 0.80 * w, 0.66 * h], fill=255)
    draw.ellipse([0.70 * w, 0.0, 0.98 * w, 0.36 * h], fill=255)  # head
    draw.polygon([(0.62 * w, 0.30 * h), (0.78 * w, 0.12 * h), (0.86 * w, 0.30 * h), (0.74 * w, 0.50 * h)], fill=255)
    leg = 0.075 * w
    for x in (0.14, 0.27, 0.56, 0.68):
        stride = w * rng.uniform(-0.04, 0.04)
        draw.polygon([(x * w, 0.5 * h), (x * w + leg, 0.5 * h), (x * w + leg + stride, h), (x * w + stride, h)], fill=255)
    _line(draw, [(0.10 * w, 0.32 * h), (0.0, 0.32 * h + h * rng.uniform(0.1, 0.35))], 0.04 * w)  # tail


def _wheeled(draw, w, h, rng):
    cabin = rng.uniform(0.45, 1.0)  # share of the length under the roof
    start = rng.uniform(0.0, 1.0 - cabin)
    draw.rounded_rectangle([start * w, 0.04 * h, (start + cabin) * w, 0.50 * h], radius=0.12 * h, fill=255)
    draw.rounded_rectangle([0, 0.35 * h, w, 0.80 * h], radius=0.10 * h, fill=255)
    d = 0.36 * h
    wheels = max(2, int(round(w / h * 1.1)))
    for i in range(wheels):
        x = 0.06 * w + i * (0.88 * w - d) / (wheels - 1)
        draw.ellipse([x, h - d, x + d, h], fill=255)


def _frame(draw, w, h, rng):
    r = 0.29 * w
    t = 0.10 * h
    for cx in (r, w - r):
        draw.ellipse([cx - r, h - 2 * r, cx + r, h], outline=255, width=max(1, int(round(t))))
    hub_y = h - r
    crank = (0.45 * w, hub_y)
    seat = (0.36 * w, 0.30 * h)
    head = (0.72 * w, 0.26 * h)
    _line(draw, [(r, hub_y), crank, (w - r, hub_y), head, seat, (r, hub_y)], 0.8 * t)
    _line(draw, [seat, crank], 0.8 * t)
    _line(draw, [head, (0.70 * w, 0.02 * h)], 0.8 * t)  # handlebar
    if rng.uniform() < 0.5:  # a tank / fairing on some
        draw.ellipse([0.38 * w, 0.22 * h, 0.70 * w, 0.52 * h], fill=255)


def _upright(draw, w, h, rng):
    top = rng.uniform(0.28, 0.40)
    draw.ellipse([0.18 * w, 0.0, 0.82 * w, top * h], fill=255)  # head / neck / crown
    waist = w * rng.uniform(0.0, 0.15)
    draw.polygon([(0.10 * w + waist, top * 0.85 * h), (0.90 * w - waist, top * 0.85 * h), (w, h), (0, h)], fill=255)


def _furniture(draw, w, h, rng):
    seat_y = h * rng.uniform(0.35, 0.55)
    draw.rectangle([0, seat_y, w, seat_y + 0.18 * h], fill=255)
    leg = 0.09 * w
    for x in (0.02 * w, 0.98 * w - leg):
        draw.rectangle([x, seat_y, x + leg, h], fill=255)
    if rng.uniform() < 0.6:  # a back rest
        draw.rectangle([0, 0, 0.16 * w, seat_y + 0.05 * h], fill=255)


def _hull(draw, w, h, rng):
    deck = h * rng.uniform(0.55, 0.70)
    draw.polygon([(0, deck), (w, deck), (0.84 * w, h), (0.12 * w, h)], fill=255)
    mast = w * rng.uniform(0.35, 0.55)
    _line(draw, [(mast, 0.04 * h), (mast, deck)], 0.035 * w)
    draw.polygon([(mast, 0.04 * h), (mast, deck - 0.04 * h), (mast + 0.40 * w, deck - 0.04 * h)], fill=255)


def _panel(draw, w, h, rng):
    screen = h * rng.uniform(0.75, 0.88)
    draw.rectangle([0, 0, w, screen], fill=255)
    draw.rectangle([0.44 * w, screen, 0.56 * w, 0.93 * h], fill=255)
    draw.rectangle([0.26 * w, 0.93 * h, 0.74 * w, h], fill=255)


SHAPES: dict[str, Callable] = {
    "winged": _winged, "quadruped": _quadruped, "wheeled": _wheeled, "frame": _frame,
    "upright": _upright, "furniture": _furniture, "hull": _hull, "panel": _panel,
}


# ---------------------------------------------------------------------------------------------------------------
# Textures: a pattern in 0..1 that mixes an object's two colours. `period` is in pixels.
# ---------------------------------------------------------------------------------------------------------------
def _coords(h, w, rng):
    """Pixel coordinates rotated by a random angle: (along, across), each [h, w]."""
    angle = rng.uniform(0, np.pi)
    x, y = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * c + y * s, y * c - x * s


def _smooth_noise(h, w, period, rng):
    """Random field with features about `period` pixels wide, in 0..1."""
    gh, gw = max(2, int(np.ceil(h / period)) + 1), max(2, int(np.ceil(w / period)) + 1)
    grid = Image.fromarray((rng.uniform(0, 255, (gh, gw))).astype(np.uint8))
    return np.asarray(grid.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def _flat(h, w, period, rng):
    return np.zeros((h, w), np.float32)


def _stripes(h, w, period, rng):
    u, _ = _coords(h, w, rng)
    return (np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)


def _checker(h, w, period, rng):
    u, v = _coords(h, w, rng)
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def _spots(h, w, period, rng):
    return (_smooth_noise(h, w, period * 0.8, rng) > 0.62).astype(np.float32)


def _grain(h, w, period, rng):
    return _smooth_noise(h, w, max(1.5, period / 6), rng)


TEXTURES: dict[str, Callable] = {"flat": _flat, "stripes": _stripes, "checker": _checker, "spots": _spots, "grain": _grain}
TEXTURE_PERIOD = 0.035  # of the image's long side


def _hsv(colour, rng, hue_jitter) -> np.ndarray:
    h, s, v = colour
    h = (h + rng.uniform(-hue_jitter, hue_jitter)) % 360
    s = float(np.clip(s + rng.uniform(-0.08, 0.08), 0, 1))
    v = float(np.clip(v + rng.uniform(-0.10, 0.10), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h / 360, s, v), np.float32) * 255


def _paint(h, w, colour, colour2, texture, period, rng, hue_jitter=12.0, strength=1.0) -> np.ndarray:
    """A textured, shaded colour patch [h, w, 3] (float, 0..255)."""
    c1, c2 = _hsv(colour, rng, hue_jitter), _hsv(colour2, rng, hue_jitter)
    mix = TEXTURES[texture](h, w, period * rng.uniform(0.7, 1.4), rng)[..., None] * strength
    u, _ = _coords(h, w, rng)
    low, span = float(u.min()), max(1.0, float(u.max() - u.min()))
    shade = np.float32(1.0) + np.float32(rng.uniform(0.05, 0.25) / span) * (u - np.float32(low + span / 2))
    return (c1 + (c2 - c1) * mix) * shade[..., None]  # light from one side


# ---------------------------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------------------------
def image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def image_id(seed: int, stream: int, index: int) -> str:
    """A VOC-looking id (2007_000032): unique per (stream, index), year cycling 2007..2012."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, index, 1]))
    number = (index // 6) * 14 + stream * 7 + int(rng.integers(1, 8))
    return f"{2007 + index % 6}_{number:06d}"


def _image_size(rng, long_side: int) -> tuple[int, int]:
    keys = list(ASPECTS)
    a, b = keys[rng.choice(len(keys), p=np.array(list(ASPECTS.values())) / sum(ASPECTS.values()))]
    short = int(round(long_side * min(a, b) / max(a, b)))
    return (long_side, short) if a >= b else (short, long_side)  # (width, height)


def _background(w, h, rng, period, class_colours) -> np.ndarray:
    """A cluttered scene: two-tone smooth field, optional horizon (wall / floor), texture and distractors."""
    tone = lambda: (rng.uniform(0, 360), rng.uniform(0.05, 0.55), rng.uniform(0.25, 0.90))  # noqa: E731
    texture = lambda: str(rng.choice(list(TEXTURES)))  # noqa: E731
    image = _paint(h, w, tone(), tone(), texture(), period * 1.5, rng, strength=rng.uniform(0.1, 0.35))
    field = _smooth_noise(h, w, max(w, h) / 3, rng)[..., None]
    image = image * (1 - 0.5 * field) + _hsv(tone(), rng, 0) * 0.5 * field
    if rng.uniform() < 0.6:
        horizon = int(h * rng.uniform(0.35, 0.75))
        image[horizon:] = _paint(h - horizon, w, tone(), tone(), texture(), period * 2, rng,
                                 strength=rng.uniform(0.1, 0.4))
    canvas = Image.new("L", (w, h))
    for _ in range(int(rng.integers(3, 10))):  # distractors: class-like colours on non-object shapes
        canvas.paste(0, (0, 0, w, h))
        draw = ImageDraw.Draw(canvas)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        size = max(w, h) * rng.uniform(0.04, 0.22)
        kind = rng.integers(4)
        if kind == 0:  # poles, cables, edges of furniture
            _line(draw, [(x, y), (x + rng.uniform(-3, 3) * size, y + rng.uniform(-1, 1) * size)], size * 0.12)
        elif kind == 1:  # windows, frames, boxes
            draw.rectangle([x, y, x + size * rng.uniform(0.3, 1.5), y + size * rng.uniform(0.3, 1.5)], fill=255)
        elif kind == 2:  # balls, lamps, bushes
            draw.ellipse([x, y, x + size, y + size * rng.uniform(0.4, 1.0)], fill=255)
        else:  # rings and hoops (wheel-like, but no frame)
            draw.ellipse([x, y, x + size, y + size], outline=255, width=max(1, int(size * 0.1)))
        box = canvas.getbbox()
        if box is None:
            continue
        x0, y0, x1, y1 = box
        region = np.asarray(canvas)[y0:y1, x0:x1] > 0
        colour = class_colours[rng.integers(len(class_colours))] if rng.uniform() < 0.5 else tone()
        image[y0:y1, x0:x1][region] = _paint(y1 - y0, x1 - x0, colour, tone(), texture(), period, rng)[region]
    return image


def _object_silhouette(app: Appearance, w: int, h: int, rng) -> np.ndarray:
    canvas = Image.new("L", (w, h))
    SHAPES[app.shape](ImageDraw.Draw(canvas), w - 1, h - 1, rng)
    if rng.uniform() < 0.5:
        canvas = canvas.transpose(Image.FLIP_LEFT_RIGHT)
    canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.NEAREST, expand=True)
    return np.asarray(canvas) > 0


def _ignore_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Mark a band `width` pixels wide along every label change as 255, like the outlines of VOC annotations."""
    edge = np.zeros(labels.shape, bool)  # both pixels of each horizontal or vertical change
    change = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= change
    edge[:, :-1] |= change
    change = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= change
    edge[:-1, :] |= change
    grow = (width - 1) // 2  # the two edge pixels already make a band of 2
    band = edge.copy()
    for shift in range(1, grow + 1):  # square dilation, separable: rows then columns
        band[:, shift:] |= edge[:, :-shift]
        band[:, :-shift] |= edge[:, shift:]
    grown = band.copy()
    for shift in range(1, grow + 1):
        grown[shift:, :] |= band[:-shift, :]
        grown[:-shift, :] |= band[shift:, :]
    out = labels.copy()
    out[grown] = IGNORE_INDEX
    return out


def render(classes: ClassSpec, seed: int, stream: int, index: int, long_side: int,
           ignore_band: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image (uint8 RGB [H, W, 3]) and its mask (uint8 [H, W]: class indices, 255 on outlines)."""
    rng = image_rng(seed, stream, index)
    w, h = _image_size(rng, long_side)
    period = max(3.0, TEXTURE_PERIOD * long_side)
    object_classes = classes.names[1:]
    appearances = [appearance_of(name) for name in object_classes]
    weights = np.array([a.weight for a in appearances])
    weights /= weights.sum()
    image = _background(w, h, rng, period, [a.colour for a in appearances])
    labels = np.zeros((h, w), np.uint8)

    counts = list(OBJECT_COUNTS)
    n = counts[rng.choice(len(counts), p=np.array(list(OBJECT_COUNTS.values())))]
    chosen = [int(rng.choice(len(appearances), p=weights))]
    for _ in range(n - 1):
        repeat = rng.uniform() < REPEAT_FIRST_CLASS
        chosen.append(chosen[0] if repeat else int(rng.choice(len(appearances), p=weights)))
    # Objects of different sizes; larger ones are drawn first so that smaller ones occlude them.
    fractions = sorted((rng.uniform(0.5, 0.95) if n == 1 else rng.uniform(0.28, 0.72) for _ in chosen), reverse=True)
    for k, fraction in zip(chosen, fractions):
        app = appearances[k]
        aspect = app.aspect * rng.uniform(0.85, 1.18)
        oh = fraction * min(w, h) * (1.0 if aspect >= 1 else 1.25)
        ow = oh * aspect
        fit = min(1.0, 0.95 * w / ow, 1.1 * h / oh)  # keep the proportions, shrink to fit the frame
        oh, ow = oh * fit, ow * fit
        oh, ow = max(12, int(oh)), max(12, int(ow))
        silhouette = _object_silhouette(app, ow, oh, rng)
        sh, sw = silhouette.shape
        # Up to ~30% of an object may leave the frame (truncated objects are common in VOC).
        x0 = int(rng.uniform(-0.3 * sw, max(-0.3 * sw + 1, w - 0.7 * sw)))
        y0 = int(rng.uniform(-0.3 * sh, max(-0.3 * sh + 1, h - 0.7 * sh)))
        ys, xs = slice(max(0, y0), min(h, y0 + sh)), slice(max(0, x0), min(w, x0 + sw))
        cut = silhouette[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        if cut.size == 0:
            continue
        paint = _paint(cut.shape[0], cut.shape[1], app.colour, app.colour2, app.texture, period, rng, app.hue_jitter)
        image[ys, xs][cut] = paint[cut]
        labels[ys, xs][cut] = classes.names.index(object_classes[k])

    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 6)  # sensor noise
    picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if rng.uniform() < 0.6:  # soften the hard drawing edges, as a camera would
        picture = picture.filter(ImageFilter.SMOOTH)
    if ignore_band:
        labels = _ignore_band(labels, max(2, round(long_side / 80)))  # VOC: ~5 px at 500 px
    return np.asarray(picture), labels


def appearance_of(name: str) -> Appearance:
    if name not in APPEARANCE:
        raise PipelineError(f"classes.file: class {name!r} has no synthetic appearance (semivl_edge.data.synthetic.APPEARANCE)")
    return APPEARANCE[name]


# ---------------------------------------------------------------------------------------------------------------
# The whole root
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticItem:
    image_id: str
    stream: int
    index: int
    mask_dir: str  # SegmentationClass (palette, with ignore outlines) or SegmentationClassAug (grayscale, SBD-like)


def plan(config: SyntheticConfig) -> dict[str, list[SyntheticItem]]:
    """Which images exist and which list each belongs to; `train` is the first part of `train_aug`."""
    pool = [SyntheticItem(image_id(config.seed, STREAM_TRAIN, i), STREAM_TRAIN, i,
                          MASK_DIR if i < config.train else AUG_MASK_DIR) for i in range(config.train_aug)]
    val = [SyntheticItem(image_id(config.seed, STREAM_VAL, i), STREAM_VAL, i, MASK_DIR) for i in range(config.val)]
    return {"train": pool[: config.train], "train_aug": pool, "val": val}


def encode(item: SyntheticItem, classes: ClassSpec, config: SyntheticConfig) -> tuple[bytes, bytes]:
    """The JPEG and PNG bytes of one planned image."""
    palette_mask = item.mask_dir == MASK_DIR
    image, mask = render(classes, config.seed, item.stream, item.index, config.long_side, ignore_band=palette_mask)
    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, "JPEG", quality=JPEG_QUALITY)
    png = io.BytesIO()
    mask_image = Image.fromarray(mask)  # mode L: the SBD convention
    if palette_mask:
        mask_image.putpalette(voc_palette(classes))  # becomes mode P with the same index values
    mask_image.save(png, "PNG")
    return jpeg.getvalue(), png.getvalue()


def voc_palette(classes: ClassSpec) -> list[int]:
    """The 256-entry flat palette of VOC masks: class colours, then (224, 224, 192) for 255 (ignore)."""
    colours = [tuple(c) for c in classes.palette] + [(0, 0, 0)] * (256 - len(classes.palette))
    colours[IGNORE_INDEX] = (224, 224, 192)
    return [v for rgb in colours for v in rgb]


def parallel_map(job: Callable, items, workers: int) -> Iterator:
    """map(job, items), in `workers` forked processes when workers > 1; results in input order either way."""
    if workers <= 1:
        yield from map(job, items)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(job, items, chunksize=8)


def _encode_item(item: SyntheticItem, classes: ClassSpec, config: SyntheticConfig) -> tuple[SyntheticItem, bytes, bytes]:
    return (item, *encode(item, classes, config))


def generate(root: str | Path, classes: ClassSpec, config: SyntheticConfig, workers: int = 1,
             progress: Callable[[Iterator, int], Iterator] | None = None) -> None:
    """Write a VOC root at `root` (which should be empty).

    `workers` > 1 renders in that many processes; the files do not depend on it.
    """
    root = Path(root)
    for name in classes.names[1:]:
        appearance_of(name)  # fail before writing anything
    lists = plan(config)
    items = lists["train_aug"] + lists["val"]
    for folder in (IMAGE_DIR, MASK_DIR, AUG_MASK_DIR, LIST_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    results = parallel_map(functools.partial(_encode_item, classes=classes, config=config), items, workers)
    for item, jpeg, png in (progress(results, len(items)) if progress else results):
        (root / IMAGE_DIR / f"{item.image_id}.jpg").write_bytes(jpeg)
        (root / item.mask_dir / f"{item.image_id}.png").write_bytes(png)
    for name, members in lists.items():
        text = "".join(f"{i}\n" for i in sorted(m.image_id for m in members))
        (root / LIST_DIR / f"{name}.txt").write_text(text)
    trainval = sorted(m.image_id for m in lists["train"] + lists["val"])
    (root / LIST_DIR / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
