"""The UniMatch(ViT) baseline's encoder: an ImageNet ViT (torchvision's `vit_b_16` layout) read out as feature maps.

The paper's first ablation row is not CLIP: an ImageNet-pretrained ViT-B/16, fully fine-tuned (backbone lr x0.001)
under a DeepLabv3+-style head (here the plain decoder: ASPP on the last block's map, two skip fusions). Its
weights come from `model.imagenet_weights`, a torchvision state dict (the official run used timm's ImageNet
weights, which a user converts to these names); `none` is a random initialisation, logged and recorded as such.

The ViT's shape follows the vision tower of `clip.model` (ViT-B-16: exactly torchvision's vit_b_16), so the
same preset runs it at the embedded scale. forward() gives the same triple as the CLIP encoder:
(skip_a, skip_b, dense) = the token maps after blocks skip_blocks[0] and [1], and after the final LayerNorm
(not normalised: this encoder has no text space).
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from ..errors import PipelineError
from .blocks import multi_head_attention
from .clip import read_state_dict
from .encoder import _as_pair, resize_position_embedding

log = logging.getLogger(__name__)

TORCHVISION_IMAGE_SIZE = 224  # the resolution of torchvision's vit_b_16 weights (a 14x14 grid)


def imagenet_vit(vision_cfg: dict) -> VisionTransformer:
    """A torchvision VisionTransformer shaped like an open_clip vision config (random init)."""
    width = int(vision_cfg["width"])
    heads = width // int(vision_cfg.get("head_width", 64))
    mlp = int(width * float(vision_cfg.get("mlp_ratio", 4.0)))
    return VisionTransformer(TORCHVISION_IMAGE_SIZE, int(vision_cfg["patch_size"]), int(vision_cfg["layers"]),
                             heads, width, mlp)


def load_imagenet_weights(vit: VisionTransformer, path: str | os.PathLike) -> None:
    """Strictly load a torchvision-format ViT state dict (any classifier head is dropped)."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("heads.")}
    expected = {k: v for k, v in vit.state_dict().items() if not k.startswith("heads.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise PipelineError(f"model.imagenet_weights: {path} is not a torchvision ViT state dict of this shape "
                            f"({'; '.join(parts)})")
    vit.load_state_dict(state, strict=False)


class ImageNetViTEncoder(nn.Module):
    """forward(images [B,3,H,W]) -> (skip_a [B,W,h,w], skip_b [B,W,h,w], dense [B,W,h,w])."""

    def __init__(self, vit: VisionTransformer, image_size: int, skip_blocks: tuple[int, int]):
        super().__init__()
        layers = vit.encoder.layers
        if skip_blocks[1] >= len(layers) - 1:
            raise PipelineError(f"model.skip_blocks: {list(skip_blocks)} must be below the last block ({len(layers) - 1})")
        self.conv_proj, self.class_token, self.layers, self.ln = vit.conv_proj, vit.class_token, layers, vit.encoder.ln
        self.skip_blocks = tuple(skip_blocks)
        self.patch_size = _as_pair(vit.patch_size)
        self.width = self.embed_dim = vit.hidden_dim
        self.grid = (image_size // self.patch_size[0], image_size // self.patch_size[1])
        old_grid = (vit.image_size // self.patch_size[0],) * 2
        pos = resize_position_embedding(vit.encoder.pos_embedding.data[0], old_grid, self.grid)
        self.pos_embedding = nn.Parameter(pos.contiguous())  # [1 + h*w, W]

    def set_trainable(self, spatial_finetune: bool) -> None:
        if spatial_finetune:
            raise PipelineError("model.spatial_finetune: the ImageNet ViT baseline is fully fine-tuned (set false)")
        for param in self.parameters():
            param.requires_grad_(True)

    def _block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        # torchvision's EncoderBlock, with the export-friendly attention of the CLIP encoder (same arithmetic).
        block = self.layers[index]
        attn = block.self_attention
        x = x + multi_head_attention(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, attn.num_heads)
        return x + block.mlp(block.ln_2(x))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1]
        if h * self.patch_size[0] != images.shape[-2] or w * self.patch_size[1] != images.shape[-1]:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        x = self.conv_proj(images).flatten(2).transpose(1, 2)
        pos = self.pos_embedding if (h, w) == self.grid else resize_position_embedding(self.pos_embedding, self.grid, (h, w))
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + pos.to(x.dtype)
        maps = []
        for index in range(len(self.layers)):
            x = self._block(index, x)
            if index in self.skip_blocks:
                maps.append(x[:, 1:])
        maps.append(self.ln(x)[:, 1:])
        return tuple(m.transpose(1, 2).reshape(m.shape[0], m.shape[-1], h, w) for m in maps)
