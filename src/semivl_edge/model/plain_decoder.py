"""A conventional segmentation head without language (the ablation / UniMatch(ViT) baseline).

Same skeleton as the VLG decoder, minus the text: the dense CLIP features are projected to d channels
(1x1 conv + GN + ReLU), refined by x + ASPP(x), upsampled twice with the encoder skips, and classified by a
3x3 conv into a fixed number of classes. Text embeddings passed to it are ignored.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ASPP, ConvNormReLU, SkipProjection, UpBlock, resize


class PlainDecoder(nn.Module):
    def __init__(self, embed_dim: int, encoder_width: int, dim: int, num_classes: int, align_corners: bool):
        super().__init__()
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.stem = ConvNormReLU(embed_dim, dim, 1)
        self.aspp = ASPP(dim)
        self.skip_b_projection = SkipProjection(encoder_width, dim // 4)
        self.skip_a_projection = SkipProjection(encoder_width, dim // 8)
        self.up1 = UpBlock(dim, dim // 4, dim // 2)
        self.up2 = UpBlock(dim // 2, dim // 8, dim // 4)
        self.head = nn.Conv2d(dim // 4, num_classes, kernel_size=3, padding=1)

    def forward(
        self,
        features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        text_embeddings: torch.Tensor | None,
        out_size: tuple[int, int],
    ) -> torch.Tensor:
        skip_a, skip_b, dense = features
        h, w = dense.shape[-2:]
        x = self.stem(dense)
        x = x + self.aspp(x)
        x = self.up1(x, resize(self.skip_b_projection(skip_b), (2 * h, 2 * w), self.align_corners))
        x = self.up2(x, resize(self.skip_a_projection(skip_a), (4 * h, 4 * w), self.align_corners))
        return resize(self.head(x), tuple(out_size), self.align_corners)
