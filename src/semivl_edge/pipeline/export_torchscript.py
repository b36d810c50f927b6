"""Stage export_torchscript: TorchScript pipeline + mobile artifacts, each checked against PyTorch.

Writes
- models/model.ts: forward(uint8 RGB [B,3,H,W], any size) -> logits [B,C,H,W]; normalisation,
  short-side resize, sliding windows and the class text embeddings are inside (plus
  segment(image, text_embeddings) for other class sets);
- models/mobile/model.ptl (lite interpreter), model_fp32.pte and model_int8.pte (ExecuTorch,
  XNNPACK): uint8 [1,3,S,S] -> logits [1,C,S,S], S = mobile.input_size, preprocessing inside;
  for open vocabulary on the phone, text_encoder.pte (CLIP's text tower: tokens [N,L] -> embeddings
  [N,E]) and model_segment_fp32.pte ((window, text embeddings [C,E]) -> logits; VLG decoder only);
  manifest.json describes them for an app;
- reports/metrics/export_torchscript.json: parity of every file with the PyTorch model on val
  images (max abs logit difference, argmax agreement), sizes in MB.
A fp32 file whose logits differ beyond export.max_abs_diff or whose argmax agreement is below
export.min_argmax_agreement stops the stage; int8 agreement is measured and reported.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..atomic import atomic_dir, atomic_path, write_json, write_metrics
from ..data.manifest import read_manifest
from ..data.voc import VOCLayout, read_ids, read_image
from ..errors import PipelineError
from ..evaluation.inference import (
    PAD_RGB,
    InferenceConfig,
    SegmentationPipeline,
    image_windows,
    predict_windows,
)
from ..export.mobile import WindowModel, export_executorch, export_lite, quantize_int8
from ..export.open_vocabulary import (
    ExecuTorchMethod,
    SegmentWindowModel,
    TextEncoder,
    export_segment_window,
    export_text_encoder,
)
from ..export.runtimes import load_runtime
from ..export.torchscript import Parity, measure_parity, save_torchscript, script_pipeline
from ..model.clip import get_tokenizer, load_clip
from ..model.io import load_model
from ..model.text import encode_texts
from ..params import Params

log = logging.getLogger(__name__)

MODEL = Path("models/model.safetensors")
TORCHSCRIPT = Path("models/model.ts")
MOBILE_DIR = Path("models/mobile")
SPLITS = Path("data/splits")
STAGE = "export_torchscript"


def image_tensor(image) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()


def evenly_spaced(ids: list[str], count: int) -> list[str]:
    """`count` ids spread evenly over the list (deterministic, covers the whole list)."""
    if count >= len(ids):
        return list(ids)
    return [ids[(i * len(ids)) // count] for i in range(count)]


def check_parity(name: str, parity: Parity, max_diff: float, min_agreement: float) -> None:
    log.info("%s parity: max |diff| %.3g, argmax agreement %.3f%% (%d images)",
             name, parity.max_abs_diff, parity.argmax_agreement_pct, parity.images)
    if parity.max_abs_diff > max_diff or parity.argmax_agreement_pct < min_agreement:
        raise PipelineError(
            f"{name}: parity with PyTorch broken (max |logit diff| {parity.max_abs_diff:.3g} > export.max_abs_diff "
            f"{max_diff:g} or argmax agreement {parity.argmax_agreement_pct:.3f}% < export.min_argmax_agreement "
            f"{min_agreement:g}%)"
        )


def run(params: Params) -> None:
    cfg = InferenceConfig.from_params(params)
    input_size = params.get_int("mobile.input_size", min=16)
    calibration_count = params.get_int("mobile.calibration_images", min=1)
    parity_count = params.get_int("export.parity_images", min=1)
    max_diff = params.get_float("export.max_abs_diff", min=0.0)
    min_agreement = params.get_float("export.min_argmax_agreement", min=0.0, max=100.0)
    if cfg.mode != "sliding":
        raise PipelineError(f"eval.mode {cfg.mode!r}: the exported files slide windows; set eval.mode sliding to export")

    network, model_cfg, text_embeddings = load_model(MODEL)
    network = network.eval()
    if text_embeddings is None:
        if model_cfg.decoder == "vlg":
            raise PipelineError(f"{MODEL}: holds no class text embeddings, which the VLG decoder needs (re-run train)")
        # the plain decoder ignores the text; the rows only give the pipeline its class count
        text_embeddings = torch.zeros(model_cfg.num_classes, int(model_cfg.embed_dim))
    text_embeddings = text_embeddings.to(torch.float32)
    num_classes = int(text_embeddings.shape[0])
    layout = VOCLayout(read_manifest()["root"])
    val_ids = evenly_spaced(read_ids(SPLITS / "val.txt"), parity_count)
    train_ids = sorted(set(read_ids(SPLITS / "labeled.txt")) | set(read_ids(SPLITS / "unlabeled.txt")))
    calibration_ids = evenly_spaced(train_ids, calibration_count)
    parity_images = [image_tensor(read_image(layout.image_path(i))) for i in val_ids]
    mean, std = model_cfg.pixel_mean, model_cfg.pixel_std
    reference = SegmentationPipeline(network, text_embeddings, mean, std, cfg).eval()
    metrics: dict = {"parity_images": len(parity_images), "num_classes": num_classes,
                     "tolerance": {"max_abs_diff": max_diff, "min_argmax_agreement_pct": min_agreement}}

    # -- models/model.ts: the whole pipeline ------------------------------------------------------
    log.info("TorchScript: tracing the network at %d px, scripting the pipeline around it", cfg.crop_size)
    scripted = script_pipeline(network, text_embeddings, mean, std, cfg)
    ts_meta = {
        "format": "semivl_edge.pipeline", "input": "uint8 RGB [B,3,H,W], any size", "output": "float logits [B,C,H,W]",
        "input_size": None, "num_classes": num_classes, "class_names": list(model_cfg.class_names),
        "inference": {"mode": cfg.mode, "short_side": cfg.short_side, "crop_size": cfg.crop_size, "stride": cfg.stride},
        "methods": {"forward": "(image)", "segment": "(image, text_embeddings [C,E])"},
    }
    with atomic_path(TORCHSCRIPT) as tmp:
        save_torchscript(scripted, tmp, ts_meta)
        runtime = load_runtime(tmp, suffix=".ts")  # parity of what was written, reloaded from disk
        parity = measure_parity(reference, runtime, parity_images)
        check_parity(str(TORCHSCRIPT), parity, max_diff, min_agreement)
        # open vocabulary: a subset of the classes through segment() must match the eager pipeline too
        subset = text_embeddings[: max(1, num_classes // 2)]
        open_parity = measure_parity(lambda x: reference.segment(x, subset),
                                     lambda x: runtime.module.segment(x, subset), parity_images[:1])
        check_parity(f"{TORCHSCRIPT} segment()", open_parity, max_diff, min_agreement)
        metrics["torchscript"] = {**parity.to_metrics(), "size_mb": round(tmp.stat().st_size / 1e6, 3),
                                  "segment_max_abs_diff": round(open_parity.max_abs_diff, 8)}

    # -- models/mobile: one fixed-size window, preprocessing inside ----------------------------------
    window_model = WindowModel(network, text_embeddings, mean, std, input_size, cfg.crop_size).eval()
    window_reference = lambda image: predict_windows(window_model, image, cfg, window_size=input_size)  # noqa: E731
    calibration = [w for i in calibration_ids
                   for w in image_windows(image_tensor(read_image(layout.image_path(i))), cfg, window_size=input_size)]
    with atomic_dir(MOBILE_DIR) as out:
        mobile: dict = {"input_size": input_size, "calibration_images": len(calibration_ids),
                        "calibration_windows": len(calibration)}
        # the uint8 window path against the float pipeline: only the uint8 rounding of the resize differs
        mobile["window_path_vs_pipeline"] = measure_parity(reference, window_reference, parity_images).to_metrics()

        log.info("lite interpreter: %s", MOBILE_DIR / "model.ptl")
        optimised = export_lite(window_model, out / "model.ptl")
        metrics["optimize_for_mobile_applied"] = int(optimised)

        log.info("ExecuTorch fp32 (XNNPACK): %s", MOBILE_DIR / "model_fp32.pte")
        delegation = {"pte_fp32": export_executorch(window_model, input_size, out / "model_fp32.pte")}
        log.info("ExecuTorch int8 (XNNPACK quantizer, %d calibration windows from %d training images): %s",
                 len(calibration), len(calibration_ids), MOBILE_DIR / "model_int8.pte")
        delegation["pte_int8"] = export_executorch(quantize_int8(window_model, calibration), input_size,
                                                   out / "model_int8.pte")

        for key, name in (("ptl", "model.ptl"), ("pte_fp32", "model_fp32.pte"), ("pte_int8", "model_int8.pte")):
            runtime = load_runtime(out / name)
            if runtime.input_size != input_size:
                raise PipelineError(f"{out / name}: takes {runtime.input_size} px windows, expected {input_size}")
            parity = measure_parity(window_reference, lambda x: predict_windows(runtime, x, cfg, window_size=input_size),
                                    parity_images)
            if key != "pte_int8":  # int8 changes the numbers by design: measured, not enforced
                check_parity(str(MOBILE_DIR / name), parity, max_diff, min_agreement)
            else:
                log.info("%s: argmax agreement with fp32 PyTorch %.2f%% (max |diff| %.3g)",
                         MOBILE_DIR / name, parity.argmax_agreement_pct, parity.max_abs_diff)
            mobile[key] = {**parity.to_metrics(), "size_mb": round((out / name).stat().st_size / 1e6, 3)}
            if key in delegation:
                mobile[key]["xnnpack"] = delegation[key]
        files = {"model.ptl": "PyTorch lite interpreter", "model_fp32.pte": "ExecuTorch XNNPACK fp32",
                 "model_int8.pte": "ExecuTorch XNNPACK int8 (static, per-channel)"}
        open_vocabulary = export_open_vocabulary(network, model_cfg, text_embeddings, cfg, input_size, out,
                                                 parity_images, window_reference, max_diff, min_agreement)
        mobile.update(open_vocabulary["metrics"])
        files.update(open_vocabulary["files"])
        write_json(out / "manifest.json", {
            "input": f"uint8 RGB [1,3,{input_size},{input_size}] (one window; /255 and mean/std normalisation inside)",
            "output": f"float logits [1,{num_classes},{input_size},{input_size}]",
            "input_size": input_size, "training_crop": cfg.crop_size,
            "windows": {"short_side": cfg.for_window(input_size).short_side, "stride": cfg.for_window(input_size).stride,
                        "pad_rgb": list(PAD_RGB)},
            "class_names": list(model_cfg.class_names),
            "text_encoder": open_vocabulary["text_encoder"],
            "files": files,
        })
        metrics["mobile"] = mobile
    write_metrics(STAGE, metrics)
    log.info("export_torchscript: wrote %s and %s", TORCHSCRIPT, MOBILE_DIR)



def export_open_vocabulary(network, model_cfg, text_embeddings, cfg, input_size, out, parity_images, window_reference,
                           max_diff, min_agreement) -> dict:
    """text_encoder.pte and model_segment_fp32.pte, each checked against PyTorch: the text tower on the class
    names' prompts, the segmenter on the model's own class set and on half of it (another class count)."""
    clip = load_clip(model_cfg.clip_model, model_cfg.clip_pretrained, quick_gelu=model_cfg.clip_quick_gelu)
    tokenizer = get_tokenizer(model_cfg.clip_model)
    encoder = TextEncoder(clip)
    log.info("ExecuTorch text encoder (CLIP %s text tower, any number of prompts): %s", model_cfg.clip_model,
             MOBILE_DIR / "text_encoder.pte")
    delegation = export_text_encoder(encoder, tokenizer, out / "text_encoder.pte")
    prompts = [f"a photo of a {name}." for name in model_cfg.class_names]
    tokens = tokenizer(prompts).to(torch.int64)
    on_device = ExecuTorchMethod(out / "text_encoder.pte")(tokens)
    text_diff = float((on_device - encode_texts(clip, tokenizer, prompts)).abs().max())
    log.info("%s parity: max |embedding diff| %.3g on %d class-name prompts", MOBILE_DIR / "text_encoder.pte",
             text_diff, len(prompts))
    if text_diff > max_diff:
        raise PipelineError(f"{MOBILE_DIR / 'text_encoder.pte'}: embeddings differ from PyTorch by {text_diff:.3g} "
                            f"> export.max_abs_diff {max_diff:g}")
    metrics = {"text_encoder": {"max_abs_diff": round(text_diff, 8), "prompts": len(prompts), "xnnpack": delegation,
                                "size_mb": round((out / "text_encoder.pte").stat().st_size / 1e6, 3)}}
    files = {"text_encoder.pte": "ExecuTorch XNNPACK fp32: CLIP text tower, int64 tokens [N, L] -> normalised [N, E]"}
    about = {"file": "text_encoder.pte", "tokenizer": "CLIP BPE (open_clip SimpleTokenizer), int64",
             "context_length": encoder.context_length, "embedding_size": int(text_embeddings.shape[1]),
             "class_embedding": "mean of a class's normalised prompt embeddings, normalised again"}
    if model_cfg.decoder != "vlg":
        log.info("model.decoder %s ignores the text: no model_segment_fp32.pte", model_cfg.decoder)
        return {"metrics": metrics, "files": files, "text_encoder": about}

    segment = SegmentWindowModel(network, text_embeddings, model_cfg.pixel_mean, model_cfg.pixel_std, input_size,
                                 cfg.crop_size).eval()
    log.info("ExecuTorch fp32 segmenter taking text embeddings (any class count): %s",
             MOBILE_DIR / "model_segment_fp32.pte")
    delegation = export_segment_window(segment, out / "model_segment_fp32.pte")
    method = ExecuTorchMethod(out / "model_segment_fp32.pte")
    parity = measure_parity(window_reference, lambda x: predict_windows(lambda w: method(w, text_embeddings), x, cfg,
                                                                      window_size=input_size), parity_images)
    check_parity(str(MOBILE_DIR / "model_segment_fp32.pte"), parity, max_diff, min_agreement)
    subset = text_embeddings[: max(1, len(text_embeddings) // 2)]
    subset_parity = measure_parity(
        lambda x: predict_windows(lambda w: segment(w, subset), x, cfg, window_size=input_size),
        lambda x: predict_windows(lambda w: method(w, subset), x, cfg, window_size=input_size), parity_images[:1])
    check_parity(f"{MOBILE_DIR / 'model_segment_fp32.pte'} with {len(subset)} classes", subset_parity, max_diff,
                 min_agreement)
    metrics["pte_segment_fp32"] = {**parity.to_metrics(), "subset_max_abs_diff": round(subset_parity.max_abs_diff, 8),
                                   "size_mb": round((out / "model_segment_fp32.pte").stat().st_size / 1e6, 3),
                                   "xnnpack": delegation}
    files["model_segment_fp32.pte"] = ("ExecuTorch XNNPACK fp32: (uint8 window [1,3,S,S], text embeddings [C,E]) -> "
                                       "logits [1,C,S,S], any class set")
    return {"metrics": metrics, "files": files, "text_encoder": about}
