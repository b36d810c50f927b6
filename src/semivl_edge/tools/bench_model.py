"""`semivl-edge bench model`: CPU latency of one eager fp32 forward pass (batch 1) of the SemiVL segmenter.

Two settings: the paper's (ViT-B-16, 512x512, 21 classes, d=128) and the embedded default of params.yaml
(clip.model at train.crop_size). Weights are randomly initialised: latency does not depend on their values.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ..model.config import ModelConfig, model_config_from_params, paper_model_config
from ..model.segmenter import build_model
from ..params import Params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file of the embedded default (default: params.yaml)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes first (default: 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-paper", action="store_true", help="only the embedded default (the paper setting takes seconds per pass)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def time_forward(cfg: ModelConfig, num_classes: int, warmup: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False).eval()
    images = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    text = torch.nn.functional.normalize(torch.randn(num_classes, cfg.embed_dim), dim=-1)
    times = []
    with torch.inference_mode():
        for step in range(warmup + repeats):
            start = time.perf_counter()
            model(images, text)
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return {
        "clip_model": cfg.clip_model,
        "image_size": cfg.image_size,
        "num_classes": num_classes,
        "decoder": cfg.decoder,
        "decoder_dim": cfg.decoder_dim,
        "mean_ms": round(statistics.fmean(times), 2),
        "p50_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "repeats": repeats,
    }


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {} if args.skip_paper else {"paper": paper_model_config()}
    settings["embedded_default"] = model_config_from_params(Params.load(args.params))
    results = {"threads": torch.get_num_threads(), "dtype": "float32", "batch": 1}
    for name, cfg in settings.items():
        results[name] = time_forward(cfg, cfg.num_classes, args.warmup, args.repeats)
    if args.json:
        print(json.dumps(results))
        return
    print(f"eager fp32 forward, batch 1, CPU, {results['threads']} thread(s), {args.warmup} warm-up + {args.repeats} timed passes")
    for name in settings:
        r = results[name]
        print(f"  {name:<17} {r['clip_model']} {r['image_size']}x{r['image_size']}, {r['num_classes']} classes, "
              f"{r['decoder']} d={r['decoder_dim']}: mean {r['mean_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, min {r['min_ms']:.1f} ms")
