"""`semivl-edge summary`: parameter counts and GFLOPs of one forward pass of a SemiVL model (no download).

The model is built with randomly initialised CLIP weights (counts and FLOPs do not depend on the values).
FLOPs are counted by torch.utils.flop_counter (multiply-add = 2 FLOPs), for one image of the given size.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..model.config import DECODERS, ModelConfig
from ..model.segmenter import SemiVLSegmenter, build_model

# The CPU build of scaled_dot_product_attention dispatches to a kernel that torch's FLOP table does not list.
_CPU_SDPA_OPS = {
    getattr(torch.ops.aten, name): (lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if hasattr(torch.ops.aten, name)
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip ViT name (default: ViT-B-16, the paper's)")
    parser.add_argument("--image-size", type=int, default=512, help="input size (default: 512)")
    parser.add_argument("--classes", type=int, default=21, help="number of classes (default: 21)")
    parser.add_argument("--decoder", choices=DECODERS, default="vlg")
    parser.add_argument("--decoder-dim", type=int, default=128, help="decoder width d (default: 128, the paper's)")
    parser.add_argument("--skip-blocks", type=int, nargs=2, default=[0, 4], metavar=("A", "B"))
    parser.add_argument("--no-spatial-finetune", action="store_true", help="count the whole encoder as trainable")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def count_flops(fn, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_SDPA_OPS) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def summarize(model: SemiVLSegmenter, image_size: int, num_classes: int) -> dict:
    cfg = model.cfg
    model.eval()
    images = torch.zeros(1, 3, image_size, image_size)
    text = torch.nn.functional.normalize(torch.randn(num_classes, cfg.embed_dim), dim=-1)
    with torch.no_grad():
        features = model.encode(images)
    encoder_flops = count_flops(model.encode, images)
    decoder_flops = count_flops(model.decode, features, text, (image_size, image_size))
    return {
        "clip_model": cfg.clip_model,
        "image_size": image_size,
        "num_classes": num_classes,
        "decoder": cfg.decoder,
        "decoder_dim": cfg.decoder_dim,
        "token_grid": list(model.encoder.grid),
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_encoder": sum(p.numel() for p in model.encoder.parameters()),
        "params_encoder_trainable": sum(p.numel() for p in model.encoder_parameters()),
        "params_decoder": sum(p.numel() for p in model.decoder_parameters()),
        "gflops": round((encoder_flops + decoder_flops) / 1e9, 3),
        "gflops_encoder": round(encoder_flops / 1e9, 3),
        "gflops_decoder": round(decoder_flops / 1e9, 3),
    }


def run(args: argparse.Namespace) -> None:
    cfg = ModelConfig(
        clip_model=args.clip_model,
        clip_pretrained="none",
        encoder="clip",
        imagenet_weights="none",
        image_size=args.image_size,
        clip_init=True,
        spatial_finetune=not args.no_spatial_finetune,
        decoder=args.decoder,
        decoder_dim=args.decoder_dim,
        skip_blocks=tuple(args.skip_blocks),
        align_corners=True,
        num_classes=args.classes,
    )
    torch.manual_seed(0)
    summary = summarize(build_model(cfg, load_pretrained=False), args.image_size, args.classes)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"SemiVL {summary['decoder']} decoder (d={summary['decoder_dim']}) on {summary['clip_model']}, "
          f"{args.image_size}x{args.image_size} input ({summary['token_grid'][0]}x{summary['token_grid'][1]} tokens), "
          f"{args.classes} classes")
    print(f"  parameters total            {summary['params_total']:>14,}")
    print(f"  encoder (all)               {summary['params_encoder']:>14,}")
    print(f"  encoder trainable           {summary['params_encoder_trainable']:>14,}")
    print(f"  decoder                     {summary['params_decoder']:>14,}")
    print(f"  GFLOPs per forward pass     {summary['gflops']:>14.2f}  "
          f"(encoder {summary['gflops_encoder']:.2f}, decoder {summary['gflops_decoder']:.2f}; 1 MAC = 2 FLOPs)")
