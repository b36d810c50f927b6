"""Training augmentation: joint image + mask geometry, strong photometric views and CutMix boxes.

The geometry (random rescale around a base short side, random crop padded with image 0 / mask 255, horizontal
flip) is applied to the image and its mask together through torchvision.transforms.v2, which resizes a
`tv_tensors.Mask` with nearest neighbours and pads it with its own fill value. For unlabeled images the "mask"
is an all-zero ignore map: after the crop it is 255 exactly where padding was added, so the unsupervised losses
skip padded pixels.

The strong views follow UniMatch / SemiVL: ColorJitter(0.5, 0.5, 0.5, 0.25) with p=0.8 (its four adjustments in
a random order), grayscale p=0.2, Gaussian blur with sigma U(0.1, 2) p=0.5, and a CutMix box with p=0.5 (2-40% of
the crop, aspect 0.3-3.3). Each sample draws its view's parameters (`sample_strong_params`); `strong_views` then
applies them to a whole batch at once in float (torchvision's per-image transforms on uint8 cost about 2 ms per
view on a CPU core, half of the default step's data time). Unlike torchvision's uint8 path, nothing is rounded to
8 bits between the adjustments.

Randomness comes from torch's global generator; the data pipeline seeds it per sample (`seeded`), so a sample's
augmentation depends only on its seed, never on the worker that draws it, the batch it is in or what ran before.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.classes import IGNORE_INDEX

COLOR_JITTER = (0.5, 0.5, 0.5, 0.25)  # brightness, contrast, saturation, hue
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)
BLUR_KERNEL = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1  # covers +-3 sigma of the widest blur
CUTMIX_AREA = (0.02, 0.4)  # fraction of the crop
CUTMIX_ASPECT = (0.3, 1 / 0.3)  # height / width


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded to `seed`, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def geometric_transform(crop_size: int, base_size: int, scale_range: Sequence[float]) -> v2.Compose:
    """Rescale the short side to base_size * U(scale_range), crop crop_size (padding as needed), flip.

    Bilinear without antialiasing, as inference resizes (evaluation.inference; the mobile runtimes have no
    antialiased resize), so training and evaluation images have the same statistics. A frozen-encoder probe
    learned identically with and without it (val mIoU 26.1 vs 26.2 after 1000 iterations).
    """
    low = max(1, int(round(base_size * scale_range[0])))
    high = max(low + 1, int(round(base_size * scale_range[1])) + 1)
    return v2.Compose([
        v2.RandomResize(low, high, antialias=False),
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(p=0.5),
    ])


# One strong view's parameters, a row of floats: colour jitter on/off, its brightness / contrast / saturation
# factors and hue shift, the order of those four adjustments, grayscale on/off, blur on/off, blur sigma.
JITTER, FACTORS, ORDER, GRAY, BLUR, SIGMA = 0, slice(1, 5), slice(5, 9), 9, 10, 11
STRONG_PARAMS = 12
LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def sample_strong_params() -> torch.Tensor:
    """Draw one strong view's parameters from torch's global generator (seeded per sample by the caller)."""
    params = torch.zeros(STRONG_PARAMS)
    if torch.rand(()) < COLOR_JITTER_P:
        params[JITTER] = 1
        params[ORDER] = torch.randperm(4).float()
        spread = torch.tensor(COLOR_JITTER)
        params[FACTORS] = torch.tensor([1.0, 1.0, 1.0, 0.0]) + spread * (2 * torch.rand(4) - 1)
    params[GRAY] = float(torch.rand(()) < GRAYSCALE_P)
    params[BLUR] = float(torch.rand(()) < BLUR_P)
    params[SIGMA] = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * torch.rand(())
    return params


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> luma [N, 1, H, W]."""
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images [N, 3, H, W] in 0..1 by shift [N] (a fraction of the colour circle)."""
    value, argmax = x.max(dim=1)
    delta = value - x.min(dim=1).values
    saturation = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    r, g, b = ((value.unsqueeze(1) - x) / delta.clamp(min=1e-12).unsqueeze(1)).unbind(1)
    hue = torch.where(argmax == 0, b - g, torch.where(argmax == 1, 2 + r - b, 4 + g - r))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    sector = hue * 6
    index = sector.floor().long() % 6
    frac = sector - sector.floor()
    p = value * (1 - saturation)
    q = value * (1 - saturation * frac)
    t = value * (1 - saturation * (1 - frac))
    sector_of = index.unsqueeze(1)

    def pick(*per_sector: torch.Tensor) -> torch.Tensor:  # the channel's value in each of the six hue sectors
        return torch.stack(per_sector, dim=1).gather(1, sector_of).squeeze(1)

    return torch.stack([pick(value, q, p, p, t, value), pick(t, value, value, q, p, p),
                        pick(p, p, t, value, value, q)], dim=1)


def _adjust(x: torch.Tensor, which: int, factor: torch.Tensor) -> torch.Tensor:
    """ColorJitter's adjustment `which` (0 brightness, 1 contrast, 2 saturation, 3 hue) with per-image factors."""
    if which == 3:
        return adjust_hue(x, factor)
    f = factor.view(-1, 1, 1, 1)
    if which == 0:
        toward = torch.zeros_like(x)
    elif which == 1:
        toward = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    else:
        toward = grayscale(x)
    return (f * x + (1 - f) * toward).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [N, 3, H, W] with a per-image sigma [N], BLUR_KERNEL taps, reflect padding."""
    n, c, h, w = x.shape
    taps = torch.arange(BLUR_KERNEL, dtype=x.dtype) - (BLUR_KERNEL - 1) / 2
    kernel = torch.exp(-0.5 * (taps / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N * 3, K]
    half = BLUR_KERNEL // 2
    y = F.pad(x.reshape(1, n * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, 1, BLUR_KERNEL), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, BLUR_KERNEL, 1), groups=n * c)
    return y.view(n, c, h, w)


def strong_views(weak: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Strong views of uint8 weak views [N, 3, H, W] with parameters [N, STRONG_PARAMS]: float in 0..1.

    Each image gets exactly its own parameters: the result for one image does not depend on the batch.
    """
    x = weak.float() / 255
    jitter = params[:, JITTER].bool()
    order, factors = params[:, ORDER].long(), params[:, FACTORS]
    for position in range(4):
        for which in range(4):
            rows = (jitter & (order[:, position] == which)).nonzero().flatten()
            if len(rows):
                x[rows] = _adjust(x[rows], which, factors[rows, which])
    gray = params[:, GRAY].bool().view(-1, 1, 1, 1)
    x = torch.where(gray, grayscale(x).expand_as(x), x)
    rows = params[:, BLUR].bool().nonzero().flatten()
    if len(rows):
        x[rows] = gaussian_blur(x[rows], params[rows, SIGMA])
    return x


def to_image(array) -> tv_tensors.Image:
    """uint8 HWC numpy array -> uint8 CHW tv_tensors.Image."""
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())


def to_mask(array) -> tv_tensors.Mask:
    return tv_tensors.Mask(torch.from_numpy(array))


def sample_cutmix_box(size: int, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A [size, size] uint8 map, 1 inside one random box (with probability `prob`), else all 0."""
    box = torch.zeros(size, size, dtype=torch.uint8)
    if torch.rand((), generator=generator).item() >= prob:
        return box
    uniform = lambda low, high: low + (high - low) * torch.rand((), generator=generator).item()  # noqa: E731
    area = uniform(*CUTMIX_AREA) * size * size
    aspect = uniform(*CUTMIX_ASPECT)
    height = min(size, max(1, int(math.sqrt(area * aspect))))
    width = min(size, max(1, int(math.sqrt(area / aspect))))
    top = int(torch.randint(0, size - height + 1, (), generator=generator))
    left = int(torch.randint(0, size - width + 1, (), generator=generator))
    box[top:top + height, left:left + width] = 1
    return box


def cutmix(base: torch.Tensor, partner: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Paste `partner` into `base` inside `box` ([B, H, W], 1 = take the partner).

    Works for images [B, C, H, W] and per-pixel maps [B, H, W] (labels, confidences, ignore masks), so the
    same box moves pixels and their targets together.
    """
    inside = box.bool()
    if base.dim() == 4:
        inside = inside.unsqueeze(1)
    return torch.where(inside, partner, base)
