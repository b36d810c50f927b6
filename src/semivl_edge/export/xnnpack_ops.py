"""The network rewritten, for the ExecuTorch export only, into operators the XNNPACK delegate takes.

XNNPACK (as ExecuTorch 1.x partitions it) has no layer norm or group norm, and its mean runs only over the two
inner axes of a 4-d tensor; every `native_layer_norm` / `native_group_norm` left to ExecuTorch's portable
(reference, single-threaded) kernels also cuts the delegated graph in two, with a hand-over at each cut. Here the
same arithmetic is spelled in operators it has: a layer norm's mean over the channels is a matmul with a row of
1/W (a fully connected layer, XNNPACK's best kernel), a group norm's mean is the 4-d inner-axes mean after a
reshape. The results equal the library's norms to float rounding; the export's parity check holds them to it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    """nn.GroupNorm on [B, C, H, W], with the mean over the inner axes of a [B, G, C/G, H*W] view."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        if not norm.affine:
            raise ValueError(f"only affine group norms are rewritten, got {norm}")
        self.groups = norm.num_groups
        self.weight, self.bias = norm.weight, norm.bias
        self.register_buffer("eps", torch.tensor([norm.eps]))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b, self.groups, c // self.groups, h * w)
        centred = grouped - grouped.mean(dim=(2, 3), keepdim=True)
        variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
        y = (centred * torch.rsqrt(variance + self.eps)).reshape(b, c, h, w)
        return y * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)


def xnnpack_friendly(module: nn.Module) -> nn.Module:
    """A copy of `module` with every LayerNorm and GroupNorm in the XNNPACK-friendly spelling (weights shared)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, XnnpackLayerNorm(child))
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, XnnpackGroupNorm(child))
    return module
