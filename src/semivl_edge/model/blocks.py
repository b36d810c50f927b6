"""Building blocks shared by the decoders: ASPP, upsampling with skips, a pre-LN transformer layer.

All of them use plain aten ops (conv, group norm, matmul, scaled_dot_product_attention, interpolate) so that
the segmenter traces with torch.jit.trace and exports with torch.export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with channels/16 groups (SemiVL: d/16), at least one, always dividing the channels."""
    groups = max(1, channels // 16)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class AtrousConv2d(nn.Conv2d):
    """A 'same'-padded dilated conv that skips the work its zero padding makes pointless.

    When the dilation reaches past the map in both directions (e.g. rate 12 or 18 on the 8x8 token grid of a
    128 crop), every off-centre tap reads padding: the result equals a 1x1 conv with the centre tap, which
    is what runs then (exactly the same output, a fraction of the work, same parameters).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        if kh > 1 and dh >= x.shape[-2] and dw >= x.shape[-1]:
            centre = self.weight[:, :, kh // 2: kh // 2 + 1, kw // 2: kw // 2 + 1]
            return F.conv2d(x, centre, self.bias)
        return super().forward(x)


class ConvNormReLU(nn.Sequential):
    """Conv (no bias: the norm has one) + GroupNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        conv = AtrousConv2d if dilation > 1 else nn.Conv2d
        super().__init__(
            conv(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            group_norm(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """ASPP image-level branch: global average, 1x1 conv + GN + ReLU, spread over the map again."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = ConvNormReLU(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(x.mean(dim=(2, 3), keepdim=True))
        return pooled.expand_as(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (rates 1, 6, 12, 18 + image pooling) and a 1x1 projection 5d -> d."""

    def __init__(self, channels: int, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvNormReLU(channels, channels, 1)]
            + [ConvNormReLU(channels, channels, 3, dilation=r) for r in rates]
            + [ImagePooling(channels)]
        )
        self.project = ConvNormReLU(channels * len(self.branches), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class SkipProjection(nn.Sequential):
    """3x3 conv + ReLU from an encoder skip map (ViT width) to a few decoder channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """x2 learned upsampling: transposed conv to (in - skip) channels, concat the skip, two conv+GN+ReLU.

    x holds n maps per image ([B * n, in, h, w]: the VLG decoder's per-class maps, n = 1 for the plain decoder) and
    the skip one map per image ([B, skip, 2h, 2w]), which every map of its image shares."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - skip_channels, kernel_size=2, stride=2)
        self.convs = nn.Sequential(
            ConvNormReLU(in_channels, out_channels, 3),
            ConvNormReLU(out_channels, out_channels, 3),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        skip = fast_layout(per_class(skip, x.shape[0] // skip.shape[0]))
        return self.convs(torch.cat([self.up(x), skip], dim=1))


def multi_head_attention(
    x: torch.Tensor, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor | None, out: nn.Linear, heads: int
) -> torch.Tensor:
    """Self-attention over x [N, L, C] with packed q/k/v projection weights (the CLIP/open_clip layout)."""
    n, length, channels = x.shape
    if torch.compiler.is_exporting():
        return out(_exported_attention(F.linear(x, qkv_weight, qkv_bias), heads))
    qkv = F.linear(x, qkv_weight, qkv_bias).reshape(n, length, 3, heads, channels // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v)
    return out(y.transpose(1, 2).reshape(n, length, channels))


def _exported_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """scaled_dot_product_attention's arithmetic in the operators XNNPACK takes (slice, permute, bmm, softmax):
    torch.export spells SDPA with a masking pattern (eq / any / where / full_like) and 4-d matmuls with expands
    that XNNPACK does not take, each a cut in the delegated graph. qkv [N, L, 3C] -> [N, L, C]."""
    n, length, packed = qkv.shape
    channels, width = packed // 3, packed // 3 // heads

    def split(index: int) -> torch.Tensor:  # [N * heads, L, width]
        part = qkv[:, :, index * channels:(index + 1) * channels].reshape(n, length, heads, width)
        return part.permute(0, 2, 1, 3).reshape(n * heads, length, width)

    scores = torch.bmm(split(0) * width ** -0.5, split(1).transpose(1, 2))
    y = torch.bmm(torch.softmax(scores, dim=-1), split(2))
    return y.reshape(n, heads, length, width).permute(0, 2, 1, 3).reshape(n, length, channels)


class TransformerLayer(nn.Module):
    """Pre-LN transformer encoder layer (self-attention + GELU feed-forward)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + multi_head_attention(self.norm1(x), self.qkv.weight, self.qkv.bias, self.out, self.heads)
        return x + self.ffn(self.norm2(x))


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """F.normalize(x, dim=dim); when exporting, spelled with XNNPACK's 4-d inner-axes mean (its only reduction)
    instead of the norm's pow / sum, which stay outside the delegate and cut the graph."""
    if not torch.compiler.is_exporting():
        return F.normalize(x, dim=dim)
    moved = x.movedim(dim, -1)
    size = moved.shape
    squares = (moved * moved).reshape(-1, 1, size[-1], 1)  # [M, 1, E, 1]: the axis to reduce is an inner one
    sum_of_squares = squares.mean(dim=(2, 3), keepdim=True) * size[-1]
    scale = torch.rsqrt(torch.clamp(sum_of_squares, min=1e-24)).reshape(*size[:-1], 1)  # 1 / max(norm, 1e-12)
    return (moved * scale).movedim(-1, dim)


def per_class(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Repeat a map shared by all classes [B, C, H, W] into the per-class batch [B * n, C, H, W]."""
    b, c, h, w = x.shape
    return x.unsqueeze(1).expand(b, num_classes, c, h, w).reshape(b * num_classes, c, h, w)


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last for the CPU when running eagerly: oneDNN's kernels for the decoder's few-channel convs
    (and their backward) are several times faster in it. Traced / exported graphs keep the default layout
    (no layout-change ops for the mobile runtimes); results are identical either way."""
    if x.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return x
    return x.contiguous(memory_format=torch.channels_last)
