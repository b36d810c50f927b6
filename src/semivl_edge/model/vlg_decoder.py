"""The vision-language-guided (VLG) decoder of SemiVL.

It never sees class identities as output channels: it reasons on one cosine-similarity map per class, so all
its weights are shared across classes and the text embeddings are an input (any number of classes).

Layout (d = decoder_dim, E = CLIP embed dim, W = ViT width), for a [h, w] token grid:
1. similarity S[b, n] = cosine of dense[b] and text[n] at every position;
2. spatial reasoning per class map: 7x7 conv 1 -> d, then x + ASPP(x);
3. semantic reasoning, twice: 4x4 average pooling; at each pooled position the classes form a sequence of
   tokens [d visual, d text (Linear E -> d + ReLU)]; pre-LN transformer layer (4 heads, FFN 4d); the first d
   channels are upsampled back and added;
4. two x2 upsampling blocks d -> d/2 -> d/4 with skips: 3x3 conv + ReLU projections of the two encoder skip
   maps (W -> d/4 for the later block, W -> d/8 for the earlier one), shared by all classes of an image;
5. 3x3 conv d/4 -> 1 per class: logits at stride patch/4, bilinearly resized to the requested size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ASPP, SkipProjection, TransformerLayer, UpBlock, fast_layout, l2_normalize, resize

SEMANTIC_LAYERS = 2
SEMANTIC_HEADS = 4
SEMANTIC_POOL = 4


class VLGDecoder(nn.Module):
    def __init__(self, embed_dim: int, encoder_width: int, dim: int, align_corners: bool):
        super().__init__()
        self.dim = dim
        self.align_corners = align_corners  # of the upsampling: semantic reasoning, skips, logits (official: true)
        self.spatial_stem = nn.Conv2d(1, dim, kernel_size=7, padding=3)
        self.spatial_aspp = ASPP(dim)
        self.text_projection = nn.Linear(embed_dim, dim)
        self.semantic_layers = nn.ModuleList(
            [TransformerLayer(2 * dim, SEMANTIC_HEADS, 4 * dim) for _ in range(SEMANTIC_LAYERS)]
        )
        self.skip_b_projection = SkipProjection(encoder_width, dim // 4)
        self.skip_a_projection = SkipProjection(encoder_width, dim // 8)
        self.up1 = UpBlock(dim, dim // 4, dim // 2)
        self.up2 = UpBlock(dim // 2, dim // 8, dim // 4)
        self.head = nn.Conv2d(dim // 4, 1, kernel_size=3, padding=1)

    def similarity(self, dense: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, n, h, w] between the dense map and the class embeddings.

        The dense map is re-normalised here although the encoder normalises it: the feature-perturbed branch of
        training feeds it after dropout2d (zeroed channels, the rest scaled 2x), and the official head, too,
        compares cosines there."""
        text = l2_normalize(text_embeddings, dim=-1)
        return torch.einsum("bchw,nc->bnhw", l2_normalize(dense, dim=1), text)

    def _semantic(self, x: torch.Tensor, text_tokens: torch.Tensor, layer: TransformerLayer, batch: int) -> torch.Tensor:
        num_classes, dim = text_tokens.shape
        if x.shape[-2] % SEMANTIC_POOL or x.shape[-1] % SEMANTIC_POOL:
            pooled = F.avg_pool2d(x, SEMANTIC_POOL, ceil_mode=True)  # [B*n, d, ph, pw]
        else:  # the same numbers (no partial windows, no padding), in the only form XNNPACK takes
            pooled = F.avg_pool2d(x, SEMANTIC_POOL, stride=SEMANTIC_POOL, count_include_pad=False)
        ph, pw = pooled.shape[-2:]
        tokens = pooled.reshape(batch, num_classes, dim, ph * pw).permute(0, 3, 1, 2)  # [B, P, n, d]
        tokens = tokens.reshape(batch * ph * pw, num_classes, dim)
        guidance = text_tokens.unsqueeze(0).expand(batch * ph * pw, num_classes, dim)
        mixed = layer(torch.cat([tokens, guidance], dim=-1))[..., :dim]  # keep the visual channels
        mixed = mixed.reshape(batch, ph * pw, num_classes, dim).permute(0, 2, 3, 1)
        mixed = mixed.reshape(batch * num_classes, dim, ph, pw)
        return x + resize(mixed, tuple(x.shape[-2:]), self.align_corners)

    def forward(
        self,
        features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        text_embeddings: torch.Tensor,
        out_size: tuple[int, int],
    ) -> torch.Tensor:
        skip_a, skip_b, dense = features
        batch, _, h, w = dense.shape
        num_classes = text_embeddings.shape[0]

        x = self.similarity(dense, text_embeddings).reshape(batch * num_classes, 1, h, w)
        x = fast_layout(self.spatial_stem(x))
        x = x + self.spatial_aspp(x)

        text_tokens = F.relu(self.text_projection(l2_normalize(text_embeddings, dim=-1)))
        for layer in self.semantic_layers:
            x = self._semantic(x, text_tokens, layer, batch)

        skip_b = resize(self.skip_b_projection(skip_b), (2 * h, 2 * w), self.align_corners)
        skip_a = resize(self.skip_a_projection(skip_a), (4 * h, 4 * w), self.align_corners)
        x = self.up1(x, skip_b)
        x = self.up2(x, skip_a)
        logits = self.head(x).reshape(batch, num_classes, 4 * h, 4 * w)
        return resize(logits, tuple(out_size), self.align_corners)
