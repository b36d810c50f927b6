"""Stage `distill`: a real-time student (MobileNetV3-Large + LR-ASPP embedding head) learns from the trained SemiVL.

Reads models/model.safetensors (the teacher and its class text embeddings), data/dataset.json and
data/splits/{labeled,unlabeled,val}.txt; trains the student with MGD's pixel-, region- and image-level terms
beside the labels (semivl_edge.distill) on the teacher's training crops (train.crop_size, base_size,
scale_range) and writes
- models/student.safetensors + models/student.json: the student and the teacher's class text embeddings, loaded
  like the teacher by every later stage (it classifies by cosine with them: same class set, same open vocabulary);
- reports/distill/loss.csv: every loss term per iteration (DVC plots);
- reports/metrics/distill.json: the terms at the end, time per iteration, and the student's and the teacher's val
  mIoU on the eval.* windows (their ratio is the issue's target: at least 0.9).
The student starts from `distill.init` (the embedded default: assets/semivl-tiny-student.safetensors, the whole
student pretrained on the embedded CLIP's dense map by `semivl-edge student-asset`), or with `distill.imagenet_weights`
from a torchvision mobilenet_v3_large state dict, or (both none) from a random init; the metrics say which.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from ..atomic import atomic_path, write_metrics
from ..basics import resolve_device
from ..data.manifest import MANIFEST, read_manifest
from ..data.voc import VOCLayout, read_ids
from ..distill.loop import TERMS, DistillConfig, DistillInputs, distill
from ..errors import PipelineError
from ..evaluation.inference import InferenceConfig
from ..model.io import load_model, save_model
from ..model.student import StudentConfig, describe_student
from ..params import Params
from ..train.data import CropSpec

log = logging.getLogger(__name__)

TEACHER = Path("models/model.safetensors")
STUDENT = Path("models/student.safetensors")
SPLITS_DIR = Path("data/splits")
CURVES = Path("reports/distill/loss.csv")


def write_curves(rows: list[dict]) -> None:
    with atomic_path(CURVES) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=("step", "loss", *TERMS))
            writer.writeheader()
            writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def run(params: Params) -> None:
    cfg = DistillConfig.from_params(params)
    device = resolve_device(params.get_str("distill.device", choices=("auto", "cpu", "cuda")), param="distill.device")
    teacher, teacher_cfg, text_embeddings = load_model(TEACHER)
    if text_embeddings is None or getattr(teacher_cfg, "decoder", None) != "vlg":
        raise PipelineError(f"{TEACHER}: the student learns in the teacher's text space, which needs a VLG-decoder "
                            "teacher with class text embeddings (model.decoder vlg)")
    student_cfg = StudentConfig(
        embed_dim=int(text_embeddings.shape[1]), num_classes=int(text_embeddings.shape[0]),
        class_names=list(teacher_cfg.class_names), head_channels=params.get_int("distill.head_channels", min=8),
        imagenet_weights=params.get_str("distill.imagenet_weights"), init=params.get_str("distill.init"),
        pixel_mean=teacher_cfg.pixel_mean, pixel_std=teacher_cfg.pixel_std,
    )
    ids = {name: read_ids(SPLITS_DIR / f"{name}.txt") for name in ("labeled", "unlabeled", "val")}
    for name, values in ids.items():
        if not values:
            raise PipelineError(f"{SPLITS_DIR / (name + '.txt')}: no ids (distill needs labeled, unlabeled and val)")
    crops = CropSpec(params.get_int("train.crop_size", min=16), params.get_int("train.base_size", min=16),
                     tuple(params.get_list("train.scale_range", float, min_len=2)), teacher_cfg.pixel_mean,
                     teacher_cfg.pixel_std)
    inputs = DistillInputs(teacher=teacher, text_embeddings=text_embeddings, student_cfg=student_cfg,
                           layout=VOCLayout(read_manifest(MANIFEST)["root"]), labeled_ids=ids["labeled"],
                           unlabeled_ids=ids["unlabeled"], val_ids=ids["val"], crops=crops,
                           inference=InferenceConfig.from_params(params))
    log.info("distilling %s into %s on %s: %d iterations of %d labeled + %d unlabeled crops", TEACHER,
             describe_student(student_cfg), device, cfg.iterations, cfg.batch_size, cfg.batch_size)

    curves: list[dict] = []
    student, summary = distill(cfg, inputs, device, on_step=lambda step, row: curves.append({"step": step, **row}))
    save_model(STUDENT, student.cpu(), student_cfg, text_embeddings)
    write_curves(curves)
    write_metrics("distill", {"student": describe_student(student_cfg), "device": str(device),
                              "weights": {"pixel": cfg.pixel_weight, "region": cfg.region_weight,
                                          "image": cfg.image_weight, "temperature": cfg.temperature},
                              **summary})
    log.info("distill: student val mIoU %.2f%% (teacher %.2f%%, ratio %.3f), %.0f s (%.2f s/it) -> %s",
             summary["val_miou"], summary["teacher_val_miou"], summary["miou_ratio_to_teacher"] or 0.0,
             summary["wall_time_s"], summary["seconds_per_iteration"], STUDENT)
