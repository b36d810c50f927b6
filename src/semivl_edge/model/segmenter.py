"""SemiVLSegmenter: dense CLIP encoder (or the baseline's ImageNet ViT) + VLG (or plain) decoder, and build_model(cfg)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import PipelineError
from .clip import PRETRAINED_NONE, clip_model_config, describe_pretrained, load_clip
from .config import ModelConfig
from .encoder import DenseCLIPEncoder
from .imagenet_vit import ImageNetViTEncoder, imagenet_vit, load_imagenet_weights
from .plain_decoder import PlainDecoder
from .vlg_decoder import VLGDecoder

log = logging.getLogger(__name__)

Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class SemiVLSegmenter(nn.Module):
    """Images normalised with cfg.pixel_mean/std [B,3,H,W] + class text embeddings [C,E] -> logits [B,C,H,W]."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.cfg = cfg

    def encode(self, images: torch.Tensor) -> Features:
        """(skip_a, skip_b, dense): two skip maps [B,W,h,w] and the L2-normalised dense map [B,E,h,w]."""
        return self.encoder(images)

    def decode(self, features: Features, text_embeddings: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Logits [B,C,*out_size]; C = rows of text_embeddings (plain decoder: cfg.num_classes, text ignored)."""
        return self.decoder(features, text_embeddings, out_size)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), text_embeddings, (images.shape[-2], images.shape[-1]))

    # -- parameter groups for the optimiser (trainable ones only) ------------------------------------
    def named_encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters() if p.requires_grad]

    def named_decoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters() if p.requires_grad]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_encoder_parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_decoder_parameters()]


def build_encoder(cfg: ModelConfig, *, load_pretrained: bool = True) -> nn.Module:
    """The encoder of `cfg` (trainable parameters set by cfg.spatial_finetune): dense CLIP, or the ImageNet ViT.

    clip_init false (ablation) or load_pretrained false (weights loaded later, e.g. by load_model) gives the
    deterministic random initialisation instead of cfg.clip_pretrained: nothing is downloaded.
    """
    if cfg.encoder == "imagenet_vit":
        return _build_imagenet_encoder(cfg, load_pretrained)
    pretrained = cfg.clip_pretrained if (cfg.clip_init and load_pretrained) else PRETRAINED_NONE
    clip = load_clip(cfg.clip_model, pretrained, quick_gelu=cfg.clip_quick_gelu)
    if int(clip.visual.output_dim) != cfg.embed_dim:
        raise PipelineError(f"model config: embed_dim {cfg.embed_dim} does not match {cfg.clip_model} ({clip.visual.output_dim})")
    encoder = DenseCLIPEncoder(clip.visual, cfg.image_size, cfg.skip_blocks, cfg.clip_model)
    encoder.set_trainable(cfg.spatial_finetune)
    if load_pretrained:
        source = describe_pretrained(pretrained, cfg.clip_model)
        log.info("encoder: %s (%s), %dx%d token grid", cfg.clip_model, source, *encoder.grid)
    return encoder


def _build_imagenet_encoder(cfg: ModelConfig, load_pretrained: bool) -> ImageNetViTEncoder:
    vit = imagenet_vit(clip_model_config(cfg.clip_model)["vision_cfg"])
    if load_pretrained and cfg.imagenet_weights != PRETRAINED_NONE:
        load_imagenet_weights(vit, cfg.imagenet_weights)
    encoder = ImageNetViTEncoder(vit, cfg.image_size, cfg.skip_blocks)
    encoder.set_trainable(cfg.spatial_finetune)
    if load_pretrained:
        log.info("encoder: %s, %dx%d token grid", describe_encoder(cfg), *encoder.grid)
    return encoder


def describe_imagenet_weights(weights: str) -> str:
    return "random init: no model.imagenet_weights" if weights == PRETRAINED_NONE else f"ImageNet weights {weights}"


def describe_encoder(cfg: ModelConfig) -> str:
    """Where the encoder's weights came from, in words (training metrics and the report)."""
    if cfg.encoder == "imagenet_vit":
        return f"ImageNet ViT shaped like {cfg.clip_model}, {describe_imagenet_weights(cfg.imagenet_weights)}"
    if not cfg.clip_init:
        return f"CLIP {cfg.clip_model} architecture, random init (model.clip_init false)"
    return f"CLIP {cfg.clip_model}, {describe_pretrained(cfg.clip_pretrained, cfg.clip_model)}"


def build_decoder(cfg: ModelConfig, encoder_width: int) -> nn.Module:
    if cfg.decoder == "vlg":
        return VLGDecoder(cfg.embed_dim, encoder_width, cfg.decoder_dim, cfg.align_corners)
    return PlainDecoder(cfg.embed_dim, encoder_width, cfg.decoder_dim, cfg.num_classes, cfg.align_corners)


def build_model(cfg: ModelConfig, *, load_pretrained: bool = True) -> SemiVLSegmenter:
    """A SemiVL segmenter for `cfg` in train mode (decoder initialised from torch's current random state)."""
    encoder = build_encoder(cfg, load_pretrained=load_pretrained)
    return SemiVLSegmenter(encoder, build_decoder(cfg, encoder.width), cfg).train()
