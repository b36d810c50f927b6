"""The one inference implementation: uint8 image in, logits at the image size out.

Every runtime of the project (eager PyTorch on the GPU, TorchScript on the CPU, the mobile
artifacts) goes through the same steps, so none of them can lose accuracy to a different
preprocessing (the porting study lost 21 mIoU points on the phone to a 300x300 squash and a
normalisation done outside the model):

1. short side resized to `short_side` (bilinear, align_corners=False, no antialiasing) on the
   0..255 scale and rounded back to uint8 levels: exactly the image a uint8 artifact is given;
2. padded at the bottom/right, where the image is smaller than one window, with black (uint8 0),
   which is what the training crop pads images with (padded logits are cut off again, so the
   value only matters through the receptive field);
3. /255 and normalised with the model's pixel mean/std;
4. sliding windows of `crop_size` with `stride` (the last window flush with the border), window
   logits averaged where windows overlap; or, in "whole" mode, one pass on the whole image
   (padded to a multiple of the patch size);
5. logits resized back to the input size (bilinear).

`SegmentationPipeline` is TorchScript-scriptable (the network inside is traced at the crop size by
`semivl_edge.export.torchscript`); `predict_windows` runs the same resize, padding and window
geometry in Python for artifacts that take one fixed-size uint8 window and normalise inside (the
mobile `.ptl` / `.pte` files), so with a window of the crop size both give the same logits. The
geometry lives in `resized_size` / `window_boxes`, used by both.

This module deliberately avoids `from __future__ import annotations`: TorchScript compiles the
functions below from their source and needs real annotations.
"""
import math
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PipelineError

MODES = ("sliding", "whole")
# Pad colour where an image is smaller than a window: black, as the training crop pads (uint8 0).
PAD_RGB = (0, 0, 0)


@dataclass(frozen=True)
class InferenceConfig:
    """Resizing and window geometry of inference (params `eval.*`)."""

    mode: str
    short_side: int
    crop_size: int
    stride: int

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PipelineError(f"eval.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("short_side", "crop_size", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipelineError(f"eval.{name} must be a positive integer, got {value!r}")
        if self.stride > self.crop_size:
            raise PipelineError(
                f"eval.stride ({self.stride}) must not exceed eval.crop_size ({self.crop_size}): windows would leave gaps"
            )

    @classmethod
    def from_params(cls, params) -> "InferenceConfig":
        """From a `Params` (eval.mode, eval.short_side, eval.crop_size, eval.stride)."""
        return cls(
            mode=params.get_str("eval.mode", choices=MODES),
            short_side=params.get_int("eval.short_side", min=1),
            crop_size=params.get_int("eval.crop_size", min=1),
            stride=params.get_int("eval.stride", min=1),
        )

    def for_window(self, window_size: int) -> "InferenceConfig":
        """The same geometry for an artifact whose window is `window_size` instead of `crop_size`.

        Short side and stride scale with the window, so objects keep the size (in window pixels)
        they had in training; the artifact resizes the window to the training crop inside.
        """
        if window_size == self.crop_size:
            return replace(self, mode="sliding")
        scale = window_size / self.crop_size
        return InferenceConfig(
            mode="sliding",
            short_side=max(1, int(self.short_side * scale + 0.5)),
            crop_size=window_size,
            stride=min(window_size, max(1, int(self.stride * scale + 0.5))),
        )


# --- geometry shared by the scripted module and the Python path ---------------------------------


def resized_size(height: int, width: int, short_side: int) -> List[int]:
    """[h, w] with the shorter side equal to `short_side` and the aspect ratio kept (rounded)."""
    short = min(height, width)
    if short == short_side:
        return [height, width]
    return [int(height * short_side / short + 0.5), int(width * short_side / short + 0.5)]


def window_starts(length: int, crop: int, stride: int) -> List[int]:
    """Window offsets along one axis of a (padded) length >= crop; the last window ends at `length`."""
    if length <= crop:
        return [0]
    count = (length - crop + stride - 1) // stride + 1
    return [min(i * stride, length - crop) for i in range(count)]


def window_boxes(height: int, width: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    """(top, left) of every crop x crop window over an image padded to at least crop x crop."""
    boxes: List[Tuple[int, int]] = []
    for top in window_starts(max(height, crop), crop, stride):
        for left in window_starts(max(width, crop), crop, stride):
            boxes.append((top, left))
    return boxes


def count_windows(height: int, width: int, cfg: InferenceConfig) -> int:
    """Network passes for one image of this size (1 in whole mode)."""
    if cfg.mode == "whole":
        return 1
    h, w = resized_size(height, width, cfg.short_side)
    return len(window_boxes(h, w, cfg.crop_size, cfg.stride))


def normalise(image: Tensor, pixel_mean: Tensor, pixel_std: Tensor) -> Tensor:
    """Image [B,3,H,W] on the 0..255 scale (uint8 or float) -> float normalised with mean/std on the 0..1 scale ([1,3,1,1])."""
    return (image.to(torch.float32) / 255.0 - pixel_mean) / pixel_std


def resize_short_side(image: Tensor, short_side: int) -> Tensor:
    """Float image on the 0..255 scale [B,3,H,W] resized so the shorter side is `short_side`.

    Bilinear, no antialiasing, rounded to uint8 levels: the same values `resize_uint8` hands a
    uint8 artifact.
    """
    size = resized_size(image.shape[2], image.shape[3], short_side)
    if size[0] == image.shape[2] and size[1] == image.shape[3]:
        return image
    resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    return resized.round().clamp(0.0, 255.0)


def pad_bottom_right(image: Tensor, height: int, width: int) -> Tensor:
    """Pad a [B,3,h,w] image with 0 (black on the 0..255 scale) to height x width."""
    if image.shape[2] == height and image.shape[3] == width:
        return image
    return F.pad(image, [0, width - image.shape[3], 0, height - image.shape[2]], value=0.0)


def resize_logits(logits: Tensor, height: int, width: int) -> Tensor:
    if logits.shape[2] == height and logits.shape[3] == width:
        return logits
    return F.interpolate(logits, size=[height, width], mode="bilinear", align_corners=False)


def _check_image(image: Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError("image must be a uint8 RGB tensor [B, 3, H, W]")
    if image.dtype != torch.uint8:
        raise ValueError("image must be uint8 (0..255 RGB); normalisation happens inside the model")


# --- the scriptable pipeline ---------------------------------------------------------------------


class SegmentationPipeline(nn.Module):
    """uint8 RGB [B,3,H,W] (any H, W) -> float logits [B,C,H,W]: preprocessing, windows, resizing inside.

    `network(images_normalised [1,3,crop,crop], text_embeddings [C,E]) -> logits [1,C,crop,crop]`;
    in "whole" mode it gets the whole resized image padded to a multiple of `size_multiple`.
    The class text embeddings are a buffer (frozen into exported files); `segment(image, text)`
    takes other embeddings (open vocabulary). Images of a batch are processed one at a time so a
    network traced at batch size 1 serves any batch.
    """

    def __init__(
        self,
        network: nn.Module,
        text_embeddings: Tensor,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        cfg: InferenceConfig,
        size_multiple: int = 16,
    ):
        super().__init__()
        if cfg.mode == "sliding" and cfg.crop_size % size_multiple:
            raise PipelineError(f"eval.crop_size ({cfg.crop_size}) must be a multiple of the model's patch size "
                                f"({size_multiple}): the network takes whole patches")
        self.network = network
        self.register_buffer("text_embeddings", text_embeddings.detach().to(torch.float32).clone())
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std), dtype=torch.float32).view(1, 3, 1, 1))
        self.sliding: bool = cfg.mode == "sliding"
        self.short_side: int = cfg.short_side
        self.crop_size: int = cfg.crop_size
        self.stride: int = cfg.stride
        self.size_multiple: int = size_multiple

    def forward(self, image: Tensor) -> Tensor:
        return self.segment(image, self.text_embeddings)

    @torch.jit.export
    def segment(self, image: Tensor, text_embeddings: Tensor) -> Tensor:
        _check_image(image)
        height, width = image.shape[2], image.shape[3]
        outputs: List[Tensor] = []
        for b in range(image.shape[0]):
            x = resize_short_side(image[b : b + 1].to(torch.float32), self.short_side)
            if self.sliding:
                logits = self._sliding(x, text_embeddings)
            else:
                logits = self._whole(x, text_embeddings)
            outputs.append(resize_logits(logits, height, width))
        return torch.cat(outputs, dim=0)

    def _sliding(self, x: Tensor, text_embeddings: Tensor) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        crop = self.crop_size
        padded_h, padded_w = max(height, crop), max(width, crop)
        x = normalise(pad_bottom_right(x, padded_h, padded_w), self.pixel_mean, self.pixel_std)
        total = torch.zeros([1, text_embeddings.shape[0], padded_h, padded_w], dtype=x.dtype, device=x.device)
        count = torch.zeros([1, 1, padded_h, padded_w], dtype=x.dtype, device=x.device)
        for box in window_boxes(padded_h, padded_w, crop, self.stride):
            top, left = box[0], box[1]
            logits = self.network(x[:, :, top : top + crop, left : left + crop], text_embeddings)
            total[:, :, top : top + crop, left : left + crop] += logits.to(total.dtype)
            count[:, :, top : top + crop, left : left + crop] += 1.0
        return (total / count)[:, :, :height, :width]

    def _whole(self, x: Tensor, text_embeddings: Tensor) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        m = self.size_multiple
        padded_h, padded_w = (height + m - 1) // m * m, (width + m - 1) // m * m
        x = normalise(pad_bottom_right(x, padded_h, padded_w), self.pixel_mean, self.pixel_std)
        return self.network(x, text_embeddings).to(torch.float32)[:, :, :height, :width]


# --- the Python path for fixed-size window artifacts ---------------------------------------------


def resize_uint8(image: Tensor, short_side: int) -> Tensor:
    """uint8 [1,3,H,W] resized exactly like `resize_short_side` (what an app feeds a uint8 artifact)."""
    resized = resize_short_side(image.to(torch.float32), short_side)
    return image if resized.shape == image.shape else resized.to(torch.uint8)


def _check_uint8_image(image: Tensor, who: str) -> None:
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise PipelineError(f"{who}: expected a uint8 image tensor [1, 3, H, W], got {got}")
    if image.dtype != torch.uint8:
        raise PipelineError(f"{who}: expected a uint8 image, got {image.dtype}")


def _resized_padded_uint8(image: Tensor, geometry: InferenceConfig, pad_rgb: Sequence[int]) -> Tuple[Tensor, int, int]:
    """The image resized to the geometry's short side and padded (bottom/right) to at least one window."""
    x = resize_uint8(image, geometry.short_side)
    h, w = x.shape[2], x.shape[3]
    crop = geometry.crop_size
    padded_h, padded_w = max(h, crop), max(w, crop)
    if padded_h != h or padded_w != w:
        canvas = torch.tensor(list(pad_rgb), dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, padded_h, padded_w).clone()
        canvas[:, :, :h, :w] = x
        x = canvas
    return x, h, w


def image_windows(
    image: Tensor, cfg: InferenceConfig, *, window_size: Optional[int] = None, pad_rgb: Sequence[int] = PAD_RGB
) -> List[Tensor]:
    """The uint8 windows [1,3,S,S] that `predict_windows` feeds an artifact for this image (e.g. for calibration)."""
    _check_uint8_image(image, "image_windows")
    geometry = cfg.for_window(window_size if window_size is not None else cfg.crop_size)
    x, _, _ = _resized_padded_uint8(image, geometry, pad_rgb)
    crop = geometry.crop_size
    return [
        x[:, :, top : top + crop, left : left + crop].contiguous()
        for top, left in window_boxes(x.shape[2], x.shape[3], crop, geometry.stride)
    ]


def predict_windows(
    window_fn: Callable[[Tensor], Tensor],
    image: Tensor,
    cfg: InferenceConfig,
    *,
    window_size: Optional[int] = None,
    pad_rgb: Sequence[int] = PAD_RGB,
) -> Tensor:
    """Logits [1,C,H,W] of a uint8 image [1,3,H,W] from an artifact that segments one uint8 window.

    `window_fn(uint8 [1,3,S,S]) -> logits [1,C,S,S]` normalises inside. S is `window_size`
    (default `cfg.crop_size`); when it differs from the training crop, the short side and stride
    scale with it (see `InferenceConfig.for_window`). Always slides (a fixed-size artifact cannot
    run "whole"). Same resize, padding and window geometry as `SegmentationPipeline`, so with
    window_size equal to the crop both give the same logits.
    """
    _check_uint8_image(image, "predict_windows")
    geometry = cfg.for_window(window_size if window_size is not None else cfg.crop_size)
    crop = geometry.crop_size
    x, h, w = _resized_padded_uint8(image, geometry, pad_rgb)
    padded_h, padded_w = x.shape[2], x.shape[3]
    total: Optional[Tensor] = None
    count = torch.zeros(1, 1, padded_h, padded_w)
    for top, left in window_boxes(padded_h, padded_w, crop, geometry.stride):
        window = x[:, :, top : top + crop, left : left + crop].contiguous()
        logits = window_fn(window).to(torch.float32)
        if logits.dim() != 4 or logits.shape[0] != 1 or tuple(logits.shape[2:]) != (crop, crop):
            raise PipelineError(
                f"predict_windows: window model returned {tuple(logits.shape)}, expected [1, C, {crop}, {crop}]"
            )
        if total is None:
            total = torch.zeros(1, logits.shape[1], padded_h, padded_w)
        total[:, :, top : top + crop, left : left + crop] += logits
        count[:, :, top : top + crop, left : left + crop] += 1.0
    assert total is not None  # window_boxes always yields at least one window
    return resize_logits((total / count)[:, :, :h, :w], image.shape[2], image.shape[3])


def pixel_agreement(a: Tensor, b: Tensor) -> float:
    """% of pixels where two logit tensors [B,C,H,W] pick the same class."""
    return float((a.argmax(dim=1) == b.argmax(dim=1)).to(torch.float64).mean().item() * 100.0)


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    value = float((a.to(torch.float32) - b.to(torch.float32)).abs().max().item())
    return value if math.isfinite(value) else float("inf")
