"""Image-caption pairs for pretraining the embedded CLIP: CLIP's web data in miniature, generated offline.

Real SemiVL starts from a CLIP trained on 400M web images and their captions. Those weights cannot be downloaded
here, so the `clip_pretrain` stage trains `semivl-tiny` on this stream instead. The images come from the
synthetic generator's own random stream (STREAM_WEB), so none of them is a train or val image of the dataset.
Like a web caption, a caption names what the picture shows and nothing about where: "a photo of a pony and a
van." - the classes covering at least `min_fraction` of the view, each named by a random one of its words
(the class name or one of its guidance concepts), in random order; a view that shows no object is captioned with
a scene word ("a photo of a wall."), and a caption sometimes names the setting ("... in front of a wall.").
By default half the views are close-ups (a 25-75% square of the full view, enlarged), captioned by what the
close-up shows: that is how a CLIP learns which words go with which part of an image. No caption ever holds a
pixel label.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .classes import ClassSpec
from .synthetic import STREAM_WEB, parallel_map, render

SCENE_WORDS = 22  # the first background guidance concepts are scenes (wall, grass, sky, ...); the rest are
# things VOC files under background (helicopter, truck, ...), which the synthetic images never show


@dataclass(frozen=True)
class CaptionConfig:
    images: int  # pictures rendered once; views are cropped from them afresh every step
    view_size: int  # the CLIP's input size
    long_side: int  # rendering size, as the dataset's (data.synthetic.long_side)
    close_up: float  # probability of a close-up view
    min_fraction: float  # a class is named when it covers this fraction of the view
    seed: int


def _resize_short_side(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    scale = size / min(h, w)
    new_size = (max(size, round(w * scale)), max(size, round(h * scale)))
    return (np.asarray(Image.fromarray(image).resize(new_size, Image.BILINEAR)),
            np.asarray(Image.fromarray(labels).resize(new_size, Image.NEAREST)))


def _render_picture(index: int, classes: ClassSpec, config: CaptionConfig) -> tuple[np.ndarray, np.ndarray]:
    image, labels = render(classes, config.seed, STREAM_WEB, index, config.long_side, ignore_band=False)
    return _resize_short_side(image, labels, config.view_size)


class CaptionedViews:
    """A pool of rendered pictures; `sample(rng)` cuts a view and writes its caption."""

    def __init__(self, classes: ClassSpec, config: CaptionConfig, workers: int = 1,
                 progress: Callable[[Iterator, int], Iterator] | None = None):
        self.classes, self.config = classes, config
        self.words = [list(dict.fromkeys([name, *concepts])) for name, concepts in
                      zip(classes.names, classes.guidance_concepts)]
        self.scene_words = classes.guidance_concepts[0][:SCENE_WORDS]
        pictures = parallel_map(functools.partial(_render_picture, classes=classes, config=config),
                                range(config.images), workers)
        self.pictures = list(progress(pictures, config.images) if progress else pictures)

    def caption(self, labels: np.ndarray, rng: random.Random) -> str:
        counts = np.bincount(labels.ravel(), minlength=self.classes.num_classes)
        shown = [c for c in range(1, self.classes.num_classes) if counts[c] >= self.config.min_fraction * labels.size]
        rng.shuffle(shown)
        scene = rng.choice(self.scene_words)
        if not shown:
            return f"a photo of a {scene}."
        caption = "a photo of " + " and ".join(f"a {rng.choice(self.words[c])}" for c in shown)
        if counts[0] >= 0.3 * labels.size and rng.random() < 0.5:  # web captions sometimes name the setting
            caption += f" in front of a {scene}"
        return caption + "."

    def sample(self, rng: random.Random) -> tuple[np.ndarray, str]:
        """One view (uint8 [S, S, 3], S = view_size) and its caption."""
        image, labels = self.pictures[rng.randrange(len(self.pictures))]
        size = self.config.view_size
        side = size if rng.random() >= self.config.close_up else rng.randrange(size // 4, 3 * size // 4 + 1)
        y, x = rng.randrange(labels.shape[0] - side + 1), rng.randrange(labels.shape[1] - side + 1)
        image, labels = image[y:y + side, x:x + side], labels[y:y + side, x:x + side]
        if side != size:
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
            labels = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return np.ascontiguousarray(image), self.caption(labels, rng)
