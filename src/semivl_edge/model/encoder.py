"""Dense CLIP image encoder: an open_clip VisionTransformer read out as feature maps (MaskCLIP value path).

The token stream runs through the blocks as usual. Features are read with the value path, which skips the
attention mixing so that each patch keeps its own content: for a block, y = x + out_proj(v(ln_1(x))), then
y + mlp(ln_2(y)). Two early blocks give the decoder's skip maps (ViT width channels); the last block gives the
dense map, followed by ln_post and the CLIP projection and L2-normalised: comparable with text embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from ..errors import PipelineError
from .blocks import l2_normalize, multi_head_attention


def resize_position_embedding(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ViT position embedding [1 + gh*gw, C]; the class slot is kept as is."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls_slot, grid = pos[:1], pos[1:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)
    return torch.cat([cls_slot, grid.to(pos.dtype)], dim=0)


def _as_pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


class DenseCLIPEncoder(nn.Module):
    """forward(images [B,3,H,W]) -> (skip_a [B,W,h,w], skip_b [B,W,h,w], dense [B,E,h,w] L2-normalised)."""

    def __init__(self, visual: nn.Module, image_size: int, skip_blocks: tuple[int, int], model_name: str = "CLIP"):
        super().__init__()
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.proj is None:
            raise PipelineError(f"clip.model: {model_name} is not a plain open_clip ViT (SemiVL needs a CLIP ViT image tower)")
        blocks = visual.transformer.resblocks
        if not all(isinstance(b, ResidualAttentionBlock) and b.attn._qkv_same_embed_dim for b in blocks):
            raise PipelineError(f"clip.model: {model_name} uses custom attention blocks, which the dense encoder does not support")
        if skip_blocks[1] >= len(blocks) - 1:
            raise PipelineError(
                f"model.skip_blocks: {list(skip_blocks)} must be below the last block ({len(blocks) - 1}) of {model_name}"
            )
        self.visual = visual
        self.skip_blocks = tuple(skip_blocks)
        self.patch_size = _as_pair(visual.patch_size)
        self.width = visual.conv1.out_channels
        self.embed_dim = visual.proj.shape[1]
        self.heads = [b.attn.num_heads for b in blocks]
        # The position embedding is resized once to the training crop; other sizes are resized on the fly.
        self.grid = (image_size // self.patch_size[0], image_size // self.patch_size[1])
        resized = resize_position_embedding(visual.positional_embedding.data, _as_pair(visual.grid_size), self.grid)
        visual.positional_embedding = nn.Parameter(resized.contiguous())
        visual.grid_size = self.grid
        visual.image_size = (image_size, image_size)

    # -- trainable parts --------------------------------------------------------------------------------
    @staticmethod
    def is_spatial_parameter(name: str) -> bool:
        """Strategy 2 (spatial fine-tuning): attention in/out projections and the position embedding."""
        return name == "visual.positional_embedding" or ".attn.in_proj_" in name or ".attn.out_proj." in name

    def set_trainable(self, spatial_finetune: bool) -> None:
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_spatial_parameter(name) if spatial_finetune else True)

    # -- forward ---------------------------------------------------------------------------------------
    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        visual = self.visual
        h, w = images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1]
        if h * self.patch_size[0] != images.shape[-2] or w * self.patch_size[1] != images.shape[-1]:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        x = visual.conv1(images).flatten(2).transpose(1, 2)  # [B, h*w, W]
        cls_token = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        pos = visual.positional_embedding
        if (h, w) != self.grid:
            pos = resize_position_embedding(pos, self.grid, (h, w))
        x = torch.cat([cls_token, x], dim=1) + pos.to(x.dtype)
        return visual.ln_pre(x), h, w

    def _block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.visual.transformer.resblocks[index]
        attn = block.attn
        y = multi_head_attention(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, attn.num_heads)
        x = x + block.ls_1(y)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def value_projection(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight [W, W], bias [W] or None): the v third of block `index`'s packed q/k/v projection."""
        attn = self.visual.transformer.resblocks[index].attn
        width = attn.embed_dim
        bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
        return attn.in_proj_weight[2 * width:], bias

    def _value_path(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.visual.transformer.resblocks[index]
        v = F.linear(block.ln_1(x), *self.value_projection(index))
        x = x + block.ls_1(block.attn.out_proj(v))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    @staticmethod
    def _to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Patch tokens [B, h*w, C] -> map [B, C, h, w]."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], h, w)

    def pooled_embeddings(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-token embedding [B, E], mean of the dense value-path embeddings [B, E]), not normalised.

        The first is CLIP's own image embedding; the second pools exactly the features that dense guidance reads.
        Contrastive pretraining aligns both with the captions (pretrain.contrastive).
        """
        x, _, _ = self._embed(images)
        last = len(self.visual.transformer.resblocks) - 1
        for index in range(last):
            x = self._block(index, x)
        visual = self.visual
        global_embedding = visual.ln_post(self._block(last, x)[:, 0]) @ visual.proj
        dense = visual.ln_post(self._value_path(last, x[:, 1:])) @ visual.proj
        return global_embedding, dense.mean(dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, h, w = self._embed(images)
        last = len(self.visual.transformer.resblocks) - 1
        skips = []
        for index in range(last):
            if index in self.skip_blocks:
                # The value path is token-wise: the class token is not needed for it.
                skips.append(self._to_map(self._value_path(index, x[:, 1:]), h, w))
            x = self._block(index, x)
        dense = self.visual.ln_post(self._value_path(last, x[:, 1:])) @ self.visual.proj  # [B, h*w, E]
        return skips[0], skips[1], self._to_map(l2_normalize(dense, dim=-1), h, w)
