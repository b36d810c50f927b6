"""The network rewritten, for the ExecuTorch export only, into operators the XNNPACK delegate takes.

XNNPACK (as ExecuTorch 1.x partitions it) has no layer norm or group norm, and its mean runs only over the two
inner axes of a 4-d tensor; every `native_layer_norm` / `native_group_norm` left to ExecuTorch's portable
(reference, single-threaded) kernels also cuts the delegated graph in two, with a hand-over at each cut. Here the
same arithmetic is spelled in operators it has: a layer norm's mean over the channels is a matmul with a row of
1/W (a fully connected layer, XNNPACK's best kernel), a group norm's mean is the 4-d inner-axes mean followed by
two fixed 1x1 convolutions. Weights that the model computes at run time (a slice of a packed weight, a part of a
kernel) become weights of their own, since XNNPACK (and the int8 quantizer) take only constant ones; the decoder's
upsampling blocks convolve their shared skip once per image. The results equal the eager model's to float
rounding; the export's parity check holds them to it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.blocks import AtrousConv2d, UpBlock
from ..model.encoder import DenseCLIPEncoder


class XnnpackLayerNorm(nn.Module):
    """nn.LayerNorm over the last axis, from matmuls and elementwise ops."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
            raise ValueError(f"only affine layer norms over one axis are rewritten, got {norm}")
        width = norm.normalized_shape[0]
        self.weight, self.bias = norm.weight, norm.bias
        self.register_buffer("average", torch.full((1, width), 1.0 / width))
        self.register_buffer("eps", torch.tensor([norm.eps]))

    def forward(self, x: Tensor) -> Tensor:
        centred = x - F.linear(x, self.average)
        variance = F.linear(centred * centred, self.average)
        y = centred * torch.rsqrt(variance + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class XnnpackGroupNorm(nn.Module):
    """nn.GroupNorm on [B, C, H, W] in channel-wise operators, without reshaping the map.

    A group's mean is the mean of its channels' spatial means: XNNPACK's inner-axes mean, then two fixed 1x1
    convolutions, channels -> groups (averaging) and groups -> channels (copying back). Reshaping to
    [B, G, C/G, H*W] instead made XNNPACK, which keeps maps channels-last, transpose every map twice per norm
    (at 512 px the decoder's .pte took 501 ms that way, 397 ms this way; int8 269 -> 162 ms)."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        if not norm.affine:
            raise ValueError(f"only affine group norms are rewritten, got {norm}")
        self.weight, self.bias = norm.weight, norm.bias
        self.register_buffer("eps", torch.tensor([norm.eps]))
        channels, groups = norm.num_channels, norm.num_groups
        membership = torch.repeat_interleave(torch.eye(groups), channels // groups, dim=1)  # [G, C]
        self.register_buffer("to_groups", (membership * groups / channels).reshape(groups, channels, 1, 1))
        self.register_buffer("to_channels", membership.t().contiguous().reshape(channels, groups, 1, 1))

    def group_mean(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, C, 1, 1]: the mean over each channel's group and the whole map."""
        return F.conv2d(F.conv2d(x.mean(dim=(2, 3), keepdim=True), self.to_groups), self.to_channels)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        centred = x - self.group_mean(x)
        y = centred * torch.rsqrt(self.group_mean(centred * centred) + self.eps)
        return y * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)


class XnnpackAtrousConv2d(nn.Module):
    """AtrousConv2d with its centre tap as a weight of its own: XNNPACK convolves only with constant weights, and
    the tap sliced out of the full kernel at run time is not one (the convolution then fell to the portable
    kernels)."""

    def __init__(self, conv: AtrousConv2d):
        super().__init__()
        self.conv = conv
        kh, kw = conv.kernel_size
        self.centre = nn.Parameter(conv.weight.detach()[:, :, kh // 2: kh // 2 + 1, kw // 2: kw // 2 + 1].clone(),
                                   requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        kh, (dh, dw) = self.conv.kernel_size[0], self.conv.dilation
        if kh > 1 and dh >= x.shape[-2] and dw >= x.shape[-1]:
            return F.conv2d(x, self.centre, self.conv.bias)
        return self.conv(x)


class XnnpackDenseCLIPEncoder(DenseCLIPEncoder):
    """DenseCLIPEncoder with each value-path projection as a weight of its own (a copy of the v third of the block's
    packed q/k/v weight): XNNPACK multiplies only by constant weights, and the int8 quantizer folds only those, so
    the slice taken at run time left these three matmuls to the portable kernels (single-threaded; at 512 px they
    made the fp32 .pte 2.1x slower than eager in the encoder)."""

    @classmethod
    def rewrite(cls, encoder: DenseCLIPEncoder) -> "XnnpackDenseCLIPEncoder":
        last = len(encoder.visual.transformer.resblocks) - 1
        projections = nn.ModuleDict()
        for index in (*encoder.skip_blocks, last):
            weight, bias = encoder.value_projection(index)
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
            if bias is not None:
                linear.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
            projections[str(index)] = linear
        encoder.__class__ = cls
        encoder.value_projections = projections
        return encoder

    def value_projection(self, index: int) -> tuple[Tensor, Tensor | None]:
        linear = self.value_projections[str(index)]
        return linear.weight, linear.bias


def _constant_conv(weight: Tensor, padding) -> nn.Conv2d:
    """A bias-free convolution with a copy of `weight` [out, in, kh, kw] as its own (frozen) weight."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[-2:]), padding=padding, bias=False)
    conv.weight = nn.Parameter(weight.clone(), requires_grad=False)
    return conv


class XnnpackUpBlock(nn.Module):
    """UpBlock with its first convolution in two parts: the one reading the skip runs once per image and its result
    is added to every map of the image, which is the convolution of the concatenation. The skip is no longer copied
    to each class first (an expand_copy on the portable kernels, then 21 convolutions of the same pixels). The two
    weight parts are weights of their own (XNNPACK convolves only with constant weights)."""

    def __init__(self, block: UpBlock):
        super().__init__()
        first, self.second = block.convs
        conv, self.norm_relu = first[0], nn.Sequential(*list(first)[1:])
        self.up = block.up
        upsampled = block.up.out_channels
        parts = conv.weight.detach().split([upsampled, conv.in_channels - upsampled], dim=1)
        self.conv_up, self.conv_skip = (_constant_conv(part, conv.padding) for part in parts)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        maps = self.conv_up(self.up(x))  # [B * n, out, H, W]
        shared = self.conv_skip(skip)  # [B, out, H, W]
        if skip.shape[0] == 1:  # one window, as the mobile files take: a plain broadcast
            maps = maps + shared
        else:
            maps = (maps.reshape(skip.shape[0], -1, *maps.shape[1:]) + shared.unsqueeze(1)).reshape(maps.shape)
        return self.second(self.norm_relu(maps))


def xnnpack_friendly(module: nn.Module) -> nn.Module:
    """A copy of `module` with every LayerNorm, GroupNorm, atrous conv, upsampling block and value path in the
    XNNPACK-friendly spelling."""
    module = copy.deepcopy(module)
    for encoder in [m for m in module.modules() if isinstance(m, DenseCLIPEncoder)]:
        XnnpackDenseCLIPEncoder.rewrite(encoder)
    for parent in list(module.modules()):  # before the norms: the new blocks hold the old blocks' group norms
        for name, child in list(parent.named_children()):
            if isinstance(child, UpBlock):
                setattr(parent, name, XnnpackUpBlock(child))
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, XnnpackLayerNorm(child))
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, XnnpackGroupNorm(child))
            elif isinstance(child, AtrousConv2d):
                setattr(parent, name, XnnpackAtrousConv2d(child))
    return module
