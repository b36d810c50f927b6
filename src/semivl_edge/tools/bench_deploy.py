"""`semivl-edge bench deploy`: export a randomly initialised model and time each runtime per window.

Builds the model (paper setting by default: ViT-B-16, 512 px window, 21 classes, decoder d=128,
skips from blocks 0 and 4), exports it the way the pipeline does (TorchScript pipeline, lite
interpreter .ptl, ExecuTorch XNNPACK .pte fp32 and int8) into a temporary folder, and times one
uint8 window through each on the CPU: eager fp32 PyTorch, TorchScript, .ptl, .pte fp32, .pte int8. With
--student the distilled student (random init) is timed the same way in the same run, beside the teacher. With
--split the encoder and the decoder are also exported and timed apart (eager, fp32 .pte, int8 .pte): where the
time goes, since the pip build of ExecuTorch has no per-operator profiler (event tracer).
Latency does not depend on the weights, so random init (nothing to download) gives the real
figures; for the same reason the int8 model is calibrated on random windows, which is fine for
timing but says nothing about its accuracy (the export_torchscript stage calibrates on training
images and measures agreement). Writes reports/benchmarks/deploy_<model>_<size>.json and .md.
"""
from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path, write_json
from ..errors import PipelineError
from ..evaluation.inference import InferenceConfig, max_abs_diff, normalise, pixel_agreement
from ..evaluation.latency import LatencyStats, cpu_model_name, time_calls
from ..export.mobile import (
    WindowModel,
    export_executorch,
    export_int8,
    export_lite,
    lower_to_executorch,
    quantize_int8,
    xnnpack_in_torch,
)
from ..export.open_vocabulary import ExecuTorchMethod
from ..export.runtimes import load_runtime, set_cpu_threads
from ..export.torchscript import save_torchscript, script_pipeline

log = logging.getLogger(__name__)

RUNTIMES = ("eager_fp32", "torchscript", "ptl", "pte_fp32", "pte_int8")
LABELS = {
    "eager_fp32": "PyTorch eager fp32",
    "torchscript": "TorchScript (frozen pipeline)",
    "ptl": "Lite interpreter .ptl",
    "pte_fp32": "ExecuTorch XNNPACK fp32 .pte",
    "pte_int8": "ExecuTorch XNNPACK int8 .pte",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip ViT name (default: ViT-B-16, the paper's)")
    parser.add_argument("--image-size", type=int, default=512, help="window / training crop in px (default: 512)")
    parser.add_argument("--classes", type=int, default=21, help="number of classes (default: 21, Pascal VOC)")
    parser.add_argument("--decoder-dim", type=int, default=128, help="VLG decoder width d (default: 128, the paper's)")
    parser.add_argument("--skip-blocks", default="0,4", help="encoder blocks feeding the decoder skips (default: 0,4)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"CPU threads for every runtime (default: {torch.get_num_threads()})")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per runtime (default: 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per runtime (default: 10)")
    parser.add_argument("--calibration", type=int, default=4, help="random windows for the int8 calibration (default: 4)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 ExecuTorch export (the slowest step)")
    parser.add_argument("--student", action="store_true",
                        help="also time the distilled student (MobileNetV3-Large + LR-ASPP) at the same window, and "
                             "its p50 as a share of the teacher's per runtime (writes deploy_<model>_<size>_student.*)")
    parser.add_argument("--split", action="store_true",
                        help="also export and time SemiVL's encoder (window -> features) and decoder (features -> "
                             "logits) apart, in eager, fp32 .pte and int8 .pte: where the time goes")
    parser.add_argument("--out", default="reports/benchmarks", help="output folder (default: reports/benchmarks)")


def _skip_blocks(text: str) -> tuple[int, int]:
    try:
        blocks = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise PipelineError(f"--skip-blocks must be two integers like 0,4, got {text!r}") from None
    if len(blocks) != 2:
        raise PipelineError(f"--skip-blocks must be two integers like 0,4, got {text!r}")
    return blocks  # type: ignore[return-value]


def _check_args(args: argparse.Namespace) -> None:
    for name in ("image_size", "classes", "threads", "repeats", "calibration"):
        if getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise PipelineError(f"--warmup must be >= 0, got {args.warmup}")
    _skip_blocks(args.skip_blocks)


def build_random_model(args: argparse.Namespace):
    """The segmenter of the requested size with random weights, and random unit text embeddings."""
    from ..model.config import ModelConfig
    from ..model.segmenter import build_model

    cfg = ModelConfig(
        clip_model=args.clip_model, clip_pretrained="none", encoder="clip", imagenet_weights="none",
        image_size=args.image_size, clip_init=True,
        spatial_finetune=True, decoder="vlg", decoder_dim=args.decoder_dim, skip_blocks=_skip_blocks(args.skip_blocks),
        align_corners=True, num_classes=args.classes, class_names=[f"class_{i}" for i in range(args.classes)],
    )
    if args.image_size % 16:
        log.warning("--image-size %d is not a multiple of 16 (the ViT patch size)", args.image_size)
    network = build_model(cfg, load_pretrained=False).eval()
    text = F.normalize(torch.randn(args.classes, int(cfg.embed_dim), generator=torch.Generator().manual_seed(1)), dim=-1)
    return network, cfg, text


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) on `threads` threads: the best of a few size^2 products."""
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    torch.mm(a, b)
    best = min(time_calls(lambda: torch.mm(a, b), warmup=1, repeats=repeats))
    return 2 * size ** 3 / (best / 1000) / 1e9


def roofline(window_model, window, threads: int, entries: dict) -> dict:
    """The model's GFLOPs per window against torch's measured fp32 matmul rate: how long an fp32 window takes at that
    rate, and each runtime's p50 as a multiple of it."""
    from .summary import count_flops

    with torch.inference_mode():
        gflops = count_flops(window_model, window) / 1e9
    rate = matmul_gflops(threads)
    floor_ms = gflops / rate * 1000
    return {"gflops_per_window": round(gflops, 2), "matmul_gflops_per_s": round(rate, 1),
            "fp32_floor_ms": round(floor_ms, 1),
            "p50_over_floor": {key: round(entry["latency_ms"]["p50"] / floor_ms, 2) for key, entry in entries.items()}}


RATIO_LABELS = {"pte_fp32_vs_eager_fp32": "ExecuTorch fp32 .pte over eager fp32",
                "pte_int8_vs_pte_fp32": "ExecuTorch int8 .pte over the fp32 .pte"}


def speed_ratios(entries: dict) -> dict:
    """How many times faster the fp32 .pte runs than eager fp32, and the int8 .pte than the fp32 .pte (p50s)."""
    p50 = {key: entry["latency_ms"]["p50"] for key, entry in entries.items()}
    pairs = {"pte_fp32_vs_eager_fp32": ("eager_fp32", "pte_fp32"), "pte_int8_vs_pte_fp32": ("pte_fp32", "pte_int8")}
    return {name: round(p50[slow] / p50[fast], 3) for name, (slow, fast) in pairs.items() if slow in p50 and fast in p50}


class EncoderPart(nn.Module):
    """A window model's first half: uint8 window -> the encoder's features (the decoder's inputs)."""

    def __init__(self, window_model: WindowModel):
        super().__init__()
        self.window_model = window_model

    def forward(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.window_model
        return model.network.encode(normalise(window, model.pixel_mean, model.pixel_std))


class DecoderPart(nn.Module):
    """A window model's second half: the encoder's features -> logits for the window."""

    def __init__(self, window_model: WindowModel):
        super().__init__()
        self.window_model = window_model

    def forward(self, skip_a: torch.Tensor, skip_b: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        model = self.window_model
        return model.network.decode((skip_a, skip_b, dense), model.text_embeddings, (model.size, model.size))


def split_timing(window_model: WindowModel, window: torch.Tensor, calibration: list, args: argparse.Namespace,
                 folder: Path) -> dict:
    """p50 ms of the encoder and of the decoder, each exported alone: {part: {runtime key: p50}}."""
    encoder = EncoderPart(window_model).eval()
    with torch.no_grad():  # not inference mode: the features are the decoder's example inputs for torch.export
        features = tuple(f.contiguous() for f in encoder(window))
        calibration_features = [tuple(f.contiguous() for f in encoder(w)) for w in calibration]
    parts = {"encoder": (encoder, (window,), calibration),
             "decoder": (DecoderPart(window_model).eval(), features, calibration_features)}
    result: dict[str, dict[str, float]] = {}
    for part, (module, inputs, part_calibration) in parts.items():
        log.info("split: timing the %s alone", part)
        with torch.inference_mode():
            result[part] = {"eager_fp32": _p50(lambda: module(*inputs), args)}
        programs = {"pte_fp32": module}
        if not args.no_int8:
            programs["pte_int8"] = quantize_int8(module, part_calibration)
        for key, program in programs.items():
            path = folder / f"{part}_{key}.pte"
            lower_to_executorch(program, inputs, path)
            method = ExecuTorchMethod(path)
            result[part][key] = _p50(lambda: method(*inputs), args)
    return result


def _p50(fn, args: argparse.Namespace) -> float:
    return round(LatencyStats.from_times(time_calls(fn, warmup=args.warmup, repeats=args.repeats)).p50, 1)


def markdown_table(result: dict) -> str:
    setting = result["setting"]
    lines = [
        f"# Deployment benchmark: {setting['clip_model']}, {setting['image_size']} px window, {setting['classes']} classes",
        "",
        f"CPU: {result['cpu']} ({result['threads']} threads), torch {result['torch']}, executorch {result['executorch']}. "
        f"Per window (one {setting['image_size']}x{setting['image_size']} uint8 input, preprocessing inside), "
        f"{result['warmup']} warm-up + {result['repeats']} timed runs. Random weights (latency does not depend on them); "
        "int8 calibrated on random windows (timing only).",
        "",
        *model_section(result, result["threads"]),
    ]
    if "student" in result:
        student = result["student"]
        lines += ["", "## The distilled student (MobileNetV3-Large + LR-ASPP embedding head), same window, same run", "",
                  *model_section(student, result["threads"]), "",
                  "Student p50 per window as a share of SemiVL's on the same runtime: "
                  + ", ".join(f"{LABELS[k]} {100 * v:.2f} %" for k, v in student["p50_share_of_teacher"].items()) + "."]
    return "\n".join(lines) + "\n"


def model_section(result: dict, threads: int) -> list[str]:
    """One model's latency table, roofline and XNNPACK delegation, as markdown lines."""
    lines = ["| runtime | mean ms | p50 ms | p90 ms | size MB | export s | argmax agreement vs eager % |",
             "|---|---|---|---|---|---|---|"]
    for key in RUNTIMES:
        entry = result["runtimes"].get(key)
        if entry is None:
            continue
        lat = entry["latency_ms"]
        size = "" if entry.get("size_mb") is None else f"{entry['size_mb']:.1f}"
        export_s = "" if entry.get("export_s") is None else f"{entry['export_s']:.1f}"
        agree = "" if entry.get("argmax_agreement_pct") is None else f"{entry['argmax_agreement_pct']:.2f}"
        lines.append(f"| {LABELS[key]} | {lat['mean']:.1f} | {lat['p50']:.1f} | {lat['p90']:.1f} | {size} | {export_s} | {agree} |")
    if not result["optimize_for_mobile_applied"]:
        lines += ["", "optimize_for_mobile was not applied: this torch build has no XNNPACK (the .ptl is unoptimised)."]
    ratios = result["speed_ratios"]
    if ratios:
        lines += ["", "Speed-ups, p50 over p50 in this run: " + ", ".join(
            f"{RATIO_LABELS[k]} {v:.2f}x" for k, v in ratios.items()) + "."]
    roof = result["roofline"]
    lines += ["", f"Roofline: {roof['gflops_per_window']} GFLOP per window; torch's fp32 matmul (2048x2048) runs at "
              f"{roof['matmul_gflops_per_s']} GFLOP/s here on {threads} threads, at which an fp32 window takes "
              f"{roof['fp32_floor_ms']} ms (a kernel faster than torch's on the model's shapes can beat it). "
              "p50 over that figure: "
              + ", ".join(f"{LABELS[k]} {v}" for k, v in roof["p50_over_floor"].items()) + "."]
    lines += ["", "XNNPACK delegation of the `.pte` files (ExecuTorch devtools): the nodes outside the delegate run on "
              "the portable reference kernels.", "",
              "| file | delegated pieces | delegated nodes | nodes left outside | most frequent outside |", "|---|---|---|---|---|"]
    for key, info in result.get("xnnpack_delegation", {}).items():
        top = ", ".join(f"{op} {n}" for op, n in list(info["non_delegated_by_operator"].items())[:8])
        lines.append(f"| {LABELS[key]} | {info['delegated_pieces']} | {info['delegated_nodes']} | "
                     f"{info['non_delegated_nodes']} | {top} |")
    if "split" in result:
        keys = list(next(iter(result["split"].values())))
        lines += ["", "Where the time goes: each part exported and timed alone, p50 ms (the decoder from the encoder's "
                  "features; int8 calibrated as above).", "",
                  "| part | " + " | ".join(LABELS[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for part, times in result["split"].items():
            lines.append(f"| {part} | " + " | ".join(f"{times[k]:.1f}" for k in keys) + " |")
    return lines


def build_random_student(args: argparse.Namespace, embed_dim: int):
    """The distilled student's network with random weights (latency does not depend on them)."""
    from ..model.student import StudentConfig, build_student

    cfg = StudentConfig(embed_dim=embed_dim, num_classes=args.classes,
                        class_names=[f"class_{i}" for i in range(args.classes)])
    student = build_student(cfg)
    return student.eval(), cfg


def time_runtimes(network, model_cfg, text, args: argparse.Namespace, name: str, split_parts: bool = False) -> dict:
    """Export `network` to every runtime in a temporary folder and time one window through each:
    {"runtimes", "speed_ratios", "xnnpack_delegation", "roofline", "optimize_for_mobile_applied"}, and "split" (the
    encoder and decoder timed apart) with `split_parts`."""
    threads, size = args.threads, args.image_size
    mean, std = model_cfg.pixel_mean, model_cfg.pixel_std
    window_model = WindowModel(network, text, mean, std, size, size).eval()
    window = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = window_model(window)

    entries: dict[str, dict] = {}

    def measure(key: str, fn, path: Path | None = None, export_s: float | None = None) -> None:
        log.info("%s: timing %s (%d warm-up + %d runs, %d threads)", name, LABELS[key], args.warmup, args.repeats,
                 threads)
        with torch.inference_mode():
            output = fn(window)
            times = time_calls(lambda: fn(window), warmup=args.warmup, repeats=args.repeats)
        stats = LatencyStats.from_times(times)
        entries[key] = {
            "latency_ms": stats.to_metrics(),
            "size_mb": round(path.stat().st_size / 1e6, 3) if path is not None else None,
            "export_s": round(export_s, 1) if export_s is not None else None,
            "max_abs_diff": round(max_abs_diff(reference, output), 6),
            "argmax_agreement_pct": round(pixel_agreement(reference, output), 3),
        }
        log.info("%s: %s mean %.1f ms, p50 %.1f ms, p90 %.1f ms", name, LABELS[key], stats.mean, stats.p50, stats.p90)

    measure("eager_fp32", window_model)
    with tempfile.TemporaryDirectory(prefix="semivl_bench_") as folder:
        folder = Path(folder)
        # one window exactly: short side = crop = the window, so the pipeline runs the network once
        cfg = InferenceConfig(mode="sliding", short_side=size, crop_size=size, stride=size)
        start = time.perf_counter()
        save_torchscript(script_pipeline(network, text, mean, std, cfg), folder / "model.ts", {"input_size": None})
        measure("torchscript", load_runtime(folder / "model.ts"), folder / "model.ts", time.perf_counter() - start)

        start = time.perf_counter()
        optimised = export_lite(window_model, folder / "model.ptl")
        measure("ptl", load_runtime(folder / "model.ptl"), folder / "model.ptl", time.perf_counter() - start)

        log.info("%s: lowering to ExecuTorch fp32 (XNNPACK)", name)
        start = time.perf_counter()
        delegation = {"pte_fp32": export_executorch(window_model, size, folder / "model_fp32.pte")}
        measure("pte_fp32", load_runtime(folder / "model_fp32.pte"), folder / "model_fp32.pte", time.perf_counter() - start)

        generator = torch.Generator().manual_seed(3)
        calibration = [torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator)
                       for _ in range(args.calibration)]
        if not args.no_int8:
            log.info("%s: quantizing (int8, %d random calibration windows) and lowering to ExecuTorch", name,
                     args.calibration)
            start = time.perf_counter()
            delegation["pte_int8"] = export_int8(window_model, calibration, size, folder / "model_int8.pte")
            measure("pte_int8", load_runtime(folder / "model_int8.pte"), folder / "model_int8.pte",
                    time.perf_counter() - start)
        split = split_timing(window_model, window, calibration, args, folder) if split_parts else None
    result = {"runtimes": entries, "speed_ratios": speed_ratios(entries), "xnnpack_delegation": delegation,
              "roofline": roofline(window_model, window, threads, entries), "optimize_for_mobile_applied": int(optimised)}
    return result if split is None else {**result, "split": split}


def student_section(student: dict, teacher: dict) -> dict:
    """The student's figures, and its p50 per window as a share of the teacher's on each runtime (same run)."""
    share = {key: round(entry["latency_ms"]["p50"] / teacher["runtimes"][key]["latency_ms"]["p50"], 4)
             for key, entry in student["runtimes"].items() if key in teacher["runtimes"]}
    return {**student, "p50_share_of_teacher": share}


def run(args: argparse.Namespace) -> None:
    _check_args(args)
    set_cpu_threads(args.threads)
    torch.manual_seed(0)
    size = args.image_size
    log.info("building %s (random init), %d px window, %d classes", args.clip_model, size, args.classes)
    network, model_cfg, text = build_random_model(args)
    teacher = time_runtimes(network, model_cfg, text, args, "SemiVL", split_parts=args.split)

    try:
        import executorch.version as et_version
        executorch_version = str(et_version.__version__)
    except ImportError:
        executorch_version = "unknown"
    result = {
        "setting": {"clip_model": args.clip_model, "image_size": size, "classes": args.classes,
                    "decoder_dim": args.decoder_dim, "skip_blocks": list(_skip_blocks(args.skip_blocks))},
        "cpu": cpu_model_name(), "machine": platform.machine(), "threads": args.threads,
        "torch": torch.__version__, "executorch": executorch_version,
        "warmup": args.warmup, "repeats": args.repeats,
        "torch_has_xnnpack": int(xnnpack_in_torch()),
        "int8_calibration": "random windows (timing only)" if not args.no_int8 else "skipped",
        **teacher,
    }
    stem = f"deploy_{args.clip_model}_{size}".replace("/", "-")
    if args.student:
        log.info("building the distilled student (MobileNetV3-Large + LR-ASPP, random init), embeddings of %d",
                 int(model_cfg.embed_dim))
        student, student_cfg = build_random_student(args, int(model_cfg.embed_dim))
        result["student"] = student_section(time_runtimes(student, student_cfg, text, args, "student"), teacher)
        stem += "_student"
    out = Path(args.out)
    write_json(out / f"{stem}.json", result)
    table = markdown_table(result)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(table)
    print(table)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
