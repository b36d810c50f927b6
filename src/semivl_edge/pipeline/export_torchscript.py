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
- the same for the distilled student (models/student.safetensors, stage distill): models/student.ts and
  models/mobile/student.ptl, student_fp32.pte, student_int8.pte, student_segment_fp32.pte (it shares the
  teacher's text encoder and class embeddings);
- reports/metrics/export_torchscript.json (the student's under `student`): parity of every file with the PyTorch model on val
  images (max abs logit difference, argmax agreement), sizes in MB.
A fp32 file whose logits differ beyond export.max_abs_diff or whose argmax agreement is below
export.min_argmax_agreement stops the stage; int8 agreement is measured and reported.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
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
from ..export.mobile import WindowModel, export_executorch, export_int8, export_lite, lower_all
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
STUDENT = Path("models/student.safetensors")  # the distilled student (stage distill): exported the same way
TORCHSCRIPT = Path("models/model.ts")
STUDENT_TORCHSCRIPT = Path("models/student.ts")
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


def load_exportable(path: Path) -> tuple:
    """(network in eval mode, its config, its float class text embeddings) of a saved model."""
    network, model_cfg, text_embeddings = load_model(path)
    if text_embeddings is None:
        if model_cfg.decoder == "vlg":
            raise PipelineError(f"{path}: holds no class text embeddings, which the VLG decoder needs (re-run train)")
        # the plain decoder ignores the text; the rows only give the pipeline its class count
        text_embeddings = torch.zeros(model_cfg.num_classes, int(model_cfg.embed_dim))
    return network.eval(), model_cfg, text_embeddings.to(torch.float32)


def run(params: Params) -> None:
    cfg = InferenceConfig.from_params(params)
    input_size = params.get_int("mobile.input_size", min=16)
    calibration_count = params.get_int("mobile.calibration_images", min=1)
    parity_count = params.get_int("export.parity_images", min=1)
    workers = params.get_int("export.workers", min=1)
    tolerance = (params.get_float("export.max_abs_diff", min=0.0),
                 params.get_float("export.min_argmax_agreement", min=0.0, max=100.0))
    if cfg.mode != "sliding":
        raise PipelineError(f"eval.mode {cfg.mode!r}: the exported files slide windows; set eval.mode sliding to export")

    network, model_cfg, text_embeddings = load_exportable(MODEL)
    student, student_cfg, student_text = load_exportable(STUDENT)
    layout = VOCLayout(read_manifest()["root"])
    val_ids = evenly_spaced(read_ids(SPLITS / "val.txt"), parity_count)
    train_ids = sorted(set(read_ids(SPLITS / "labeled.txt")) | set(read_ids(SPLITS / "unlabeled.txt")))
    calibration_ids = evenly_spaced(train_ids, calibration_count)
    parity_images = [image_tensor(read_image(layout.image_path(i))) for i in val_ids]
    # int8 calibration windows: training images cut as inference cuts them
    calibration = [w for i in calibration_ids
                   for w in image_windows(image_tensor(read_image(layout.image_path(i))), cfg, window_size=input_size)]
    metrics: dict = {"parity_images": len(parity_images), "num_classes": int(text_embeddings.shape[0]),
                     "tolerance": {"max_abs_diff": tolerance[0], "min_argmax_agreement_pct": tolerance[1]}}
    checks = Checks(cfg, input_size, parity_images, calibration, *tolerance)

    metrics["torchscript"] = export_torchscript_file(TORCHSCRIPT, network, model_cfg, text_embeddings, checks)
    student_metrics = {"torchscript": export_torchscript_file(STUDENT_TORCHSCRIPT, student, student_cfg, student_text,
                                                              checks)}
    with atomic_dir(MOBILE_DIR) as out:
        teacher = MobileModel("model", network, model_cfg, text_embeddings, checks)
        pupil = MobileModel("student", student, student_cfg, student_text, checks)
        clip = load_clip(model_cfg.clip_model, model_cfg.clip_pretrained, quick_gelu=model_cfg.clip_quick_gelu)
        tokenizer = get_tokenizer(model_cfg.clip_model)
        optimised = teacher.export_lite(out)
        pupil.export_lite(out)
        log.info("ExecuTorch (XNNPACK): fp32, int8 (%d calibration windows) and the open-vocabulary files of both "
                 "models, and the CLIP %s text tower (text_encoder.pte) for the app to embed new class names",
                 len(calibration), model_cfg.clip_model)
        delegation = lower_all({**teacher.lowering_jobs(out),
                                out / "text_encoder.pte": (export_text_encoder, (TextEncoder(clip), tokenizer)),
                                **pupil.lowering_jobs(out)}, workers)
        mobile, files = teacher.check(out, delegation)
        metrics["optimize_for_mobile_applied"] = int(optimised)
        mobile.update({"input_size": input_size, "calibration_images": len(calibration_ids),
                       "calibration_windows": len(calibration)})
        text_metrics, text_files, text_encoder = check_text_encoder(clip, tokenizer, model_cfg, text_embeddings, out,
                                                                    tolerance[0], delegation["text_encoder.pte"])
        mobile.update(text_metrics)
        files.update(text_files)
        student_mobile, student_files = pupil.check(out, delegation)
        files.update(student_files)
        write_json(out / "manifest.json", {
            "input": f"uint8 RGB [1,3,{input_size},{input_size}] (one window; /255 and mean/std normalisation inside)",
            "output": f"float logits [1,{metrics['num_classes']},{input_size},{input_size}]",
            "input_size": input_size, "training_crop": cfg.crop_size,
            "windows": {"short_side": cfg.for_window(input_size).short_side, "stride": cfg.for_window(input_size).stride,
                        "pad_rgb": list(PAD_RGB)},
            "class_names": list(model_cfg.class_names),
            "text_encoder": text_encoder,
            "files": files,
        })
        metrics["mobile"] = mobile
        student_metrics["mobile"] = student_mobile
    metrics["student"] = student_metrics
    write_metrics(STAGE, metrics)
    log.info("export_torchscript: wrote %s, %s and %s", TORCHSCRIPT, STUDENT_TORCHSCRIPT, MOBILE_DIR)


@dataclass(frozen=True)
class Checks:
    """What every export is checked with: the window geometry, the images, the tolerances."""

    cfg: InferenceConfig
    input_size: int
    parity_images: list
    calibration: list
    max_diff: float
    min_agreement: float

    def enforce(self, name: str, parity: Parity) -> None:
        check_parity(name, parity, self.max_diff, self.min_agreement)


def export_torchscript_file(path: Path, network, model_cfg, text_embeddings, checks: Checks) -> dict:
    """`path` (.ts): the whole pipeline, reloaded from disk and checked against PyTorch, with segment() on half the
    classes too (open vocabulary)."""
    cfg, mean, std = checks.cfg, model_cfg.pixel_mean, model_cfg.pixel_std
    num_classes = int(text_embeddings.shape[0])
    reference = SegmentationPipeline(network, text_embeddings, mean, std, cfg).eval()
    log.info("TorchScript %s: tracing the network at %d px, scripting the pipeline around it", path, cfg.crop_size)
    scripted = script_pipeline(network, text_embeddings, mean, std, cfg)
    ts_meta = {
        "format": "semivl_edge.pipeline", "input": "uint8 RGB [B,3,H,W], any size", "output": "float logits [B,C,H,W]",
        "input_size": None, "num_classes": num_classes, "class_names": list(model_cfg.class_names),
        "inference": {"mode": cfg.mode, "short_side": cfg.short_side, "crop_size": cfg.crop_size, "stride": cfg.stride},
        "methods": {"forward": "(image)", "segment": "(image, text_embeddings [C,E])"},
    }
    with atomic_path(path) as tmp:
        save_torchscript(scripted, tmp, ts_meta)
        runtime = load_runtime(tmp, suffix=".ts")  # parity of what was written, reloaded from disk
        parity = measure_parity(reference, runtime, checks.parity_images)
        checks.enforce(str(path), parity)
        subset = text_embeddings[: max(1, num_classes // 2)]
        open_parity = measure_parity(lambda x: reference.segment(x, subset),
                                     lambda x: runtime.module.segment(x, subset), checks.parity_images[:1])
        checks.enforce(f"{path} segment()", open_parity)
        return {**parity.to_metrics(), "size_mb": round(tmp.stat().st_size / 1e6, 3),
                "segment_max_abs_diff": round(open_parity.max_abs_diff, 8)}


class MobileModel:
    """One model's mobile files, <prefix>.ptl, <prefix>_fp32.pte, <prefix>_int8.pte and, for a model that takes text,
    <prefix>_segment_fp32.pte (one uint8 window, preprocessing inside): how each is made, and checked against
    PyTorch once written."""

    def __init__(self, prefix: str, network, model_cfg, text_embeddings, checks: Checks):
        cfg, size = checks.cfg, checks.input_size
        mean, std = model_cfg.pixel_mean, model_cfg.pixel_std
        self.model_cfg, self.text_embeddings, self.checks = model_cfg, text_embeddings, checks
        self.window_model = WindowModel(network, text_embeddings, mean, std, size, cfg.crop_size).eval()
        self.reference = SegmentationPipeline(network, text_embeddings, mean, std, cfg).eval()
        self.segment = (SegmentWindowModel(network, text_embeddings, mean, std, size, cfg.crop_size).eval()
                        if model_cfg.decoder == "vlg" else None)  # the plain decoder ignores the text
        self.names = {"ptl": f"{prefix}.ptl", "pte_fp32": f"{prefix}_fp32.pte", "pte_int8": f"{prefix}_int8.pte",
                      "pte_segment_fp32": f"{prefix}_segment_fp32.pte"}

    def window_reference(self, image):
        return predict_windows(self.window_model, image, self.checks.cfg, window_size=self.checks.input_size)

    def export_lite(self, out: Path) -> bool:
        """Write the .ptl; returns whether optimize_for_mobile was applied."""
        log.info("lite interpreter: %s", MOBILE_DIR / self.names["ptl"])
        return export_lite(self.window_model, out / self.names["ptl"])

    def lowering_jobs(self, out: Path) -> dict:
        """The .pte files to lower (export.mobile.lower_all), the slowest first."""
        size = self.checks.input_size
        jobs = {out / self.names["pte_int8"]: (export_int8, (self.window_model, self.checks.calibration, size))}
        if self.segment is not None:
            jobs[out / self.names["pte_segment_fp32"]] = (export_segment_window, (self.segment,))
        jobs[out / self.names["pte_fp32"]] = (export_executorch, (self.window_model, size))
        return jobs

    def check(self, out: Path, delegation: dict) -> tuple[dict, dict]:
        """Every written file reloaded and compared with PyTorch on the parity images. (metrics, manifest files)"""
        cfg, size, checks = self.checks.cfg, self.checks.input_size, self.checks
        # the uint8 window path against the float pipeline: only the uint8 rounding of the resize differs
        mobile: dict = {"window_path_vs_pipeline": measure_parity(self.reference, self.window_reference,
                                                                  checks.parity_images).to_metrics()}
        for key in ("ptl", "pte_fp32", "pte_int8"):
            name = self.names[key]
            runtime = load_runtime(out / name)
            if runtime.input_size != size:
                raise PipelineError(f"{out / name}: takes {runtime.input_size} px windows, expected {size}")
            parity = measure_parity(self.window_reference,
                                    lambda x: predict_windows(runtime, x, cfg, window_size=size), checks.parity_images)
            if key != "pte_int8":  # int8 changes the numbers by design: measured, not enforced
                checks.enforce(str(MOBILE_DIR / name), parity)
            else:
                log.info("%s: argmax agreement with fp32 PyTorch %.2f%% (max |diff| %.3g)",
                         MOBILE_DIR / name, parity.argmax_agreement_pct, parity.max_abs_diff)
            mobile[key] = {**parity.to_metrics(), "size_mb": round((out / name).stat().st_size / 1e6, 3)}
            if name in delegation:
                mobile[key]["xnnpack"] = delegation[name]
        files = {self.names["ptl"]: "PyTorch lite interpreter", self.names["pte_fp32"]: "ExecuTorch XNNPACK fp32",
                 self.names["pte_int8"]: "ExecuTorch XNNPACK int8 (static, per-channel)"}
        if self.segment is None:
            log.info("model.decoder %s ignores the text: no %s", self.model_cfg.decoder, self.names["pte_segment_fp32"])
            return mobile, files
        name = self.names["pte_segment_fp32"]
        mobile["pte_segment_fp32"] = {**self.check_segment(out / name), "xnnpack": delegation[name]}
        files[name] = ("ExecuTorch XNNPACK fp32: (uint8 window [1,3,S,S], text embeddings [C,E]) -> logits [1,C,S,S], "
                       "any class set")
        return mobile, files

    def check_segment(self, path: Path) -> dict:
        """The .pte taking (window, text embeddings) for any class set, checked on the model's classes and on half."""
        cfg, size, checks, text = self.checks.cfg, self.checks.input_size, self.checks, self.text_embeddings
        method = ExecuTorchMethod(path)
        parity = measure_parity(self.window_reference, lambda x: predict_windows(lambda w: method(w, text), x, cfg,
                                                                                 window_size=size), checks.parity_images)
        checks.enforce(str(MOBILE_DIR / path.name), parity)
        subset = text[: max(1, len(text) // 2)]
        subset_parity = measure_parity(
            lambda x: predict_windows(lambda w: self.segment(w, subset), x, cfg, window_size=size),
            lambda x: predict_windows(lambda w: method(w, subset), x, cfg, window_size=size), checks.parity_images[:1])
        checks.enforce(f"{MOBILE_DIR / path.name} with {len(subset)} classes", subset_parity)
        return {**parity.to_metrics(), "subset_max_abs_diff": round(subset_parity.max_abs_diff, 8),
                "size_mb": round(path.stat().st_size / 1e6, 3)}


def check_text_encoder(clip, tokenizer, model_cfg, text_embeddings, out: Path, max_diff: float,
                       delegation: dict) -> tuple[dict, dict, dict]:
    """text_encoder.pte (the teacher's CLIP text tower) against PyTorch on the class names' prompts.
    (metrics, manifest files, the manifest's text_encoder entry)"""
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
             "context_length": int(clip.context_length), "embedding_size": int(text_embeddings.shape[1]),
             "class_embedding": "mean of a class's normalised prompt embeddings, normalised again"}
    return metrics, files, about
