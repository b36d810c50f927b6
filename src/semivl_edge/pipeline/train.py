"""Stage `train`: semi-supervised segmentation training (SemiVL, UniMatch or supervised-only, by train.method).

Reads data/dataset.json (the VOC root), data/splits/{labeled,unlabeled,val}.txt and data/text_embeddings/;
writes models/model.safetensors + models/model.json (the best-val model by default, train.save), the DVCLive
curves in reports/train/, reports/metrics/train.json, and resumable checkpoints in models/checkpoints/ (a
killed run continues from its last checkpoint on the next `dvc repro`, if nothing it depends on changed).

Devices: CPU, one GPU (bf16 autocast with train.amp), or train.gpus > 1 GPUs: the stage re-launches itself
under `python -m torch.distributed.run --standalone --nproc_per_node N`. For several machines start
`torchrun ... stages/train.py --params params.yaml` on each node (semivl_edge.train.distributed).

The methods and the mapping of the paper's ablation onto parameters: semivl_edge.train.config.
"""
from __future__ import annotations

import os

# Before torch loads OpenMP: threads that wait passively instead of spinning. Training shares the CPU with its
# data workers (and, on a shared machine, with other jobs); spinning threads that wait for a busy core made
# training steps 2-10x slower (and in-process data loading 30x slower) on 2 shared cores. Override by setting
# OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from ..code_closure import import_closure  # noqa: E402
from ..data.classes import load_classes
from ..data.manifest import MANIFEST, read_manifest
from ..data.voc import read_ids
from ..errors import PipelineError
from ..params import Params
from ..train import checkpoint as ckpt
from ..train.config import TrainConfig
from ..train.distributed import Runtime, check_multi_gpu, launched_by_torchrun, setup, teardown, torchrun_command
from ..train.loop import ModelApi, TrainInputs, TrainOutputs, train

log = logging.getLogger(__name__)

SPLITS_DIR = Path("data/splits")
EMBEDDINGS_DIR = Path("data/text_embeddings")
# Code whose change makes an old checkpoint stale (besides the parameters and data files): everything this stage
# imports, as DVC sees it.
CODE_PATHS = sorted(import_closure(__file__))
# Settings that do not change the computation and so may differ between a run and its resume.
NOT_FINGERPRINTED = ("workers", "checkpoint_every")


def load_inputs(params: Params, cfg: TrainConfig, runtime: Runtime) -> TrainInputs:
    from ..model.config import model_config_from_params
    from ..model.text import read_text_embeddings

    manifest = read_manifest(MANIFEST)
    classes = load_classes(params.get_str("classes.file"))
    if manifest["class_names"] != classes.names:
        raise PipelineError(f"{MANIFEST}: the dataset's classes differ from classes.file (re-run the `dataset` stage)")
    model_cfg = model_config_from_params(params, classes.names)
    ids = {name: read_ids(SPLITS_DIR / f"{name}.txt") for name in ("labeled", "unlabeled", "val")}
    for name in ("labeled", "val") + (("unlabeled",) if cfg.semi_supervised else ()):
        if not ids[name]:
            raise PipelineError(f"{SPLITS_DIR / (name + '.txt')}: no ids (train.method {cfg.method} needs them)")

    text = read_text_embeddings(EMBEDDINGS_DIR)
    class_embeddings = text.classes.float()
    if tuple(class_embeddings.shape) != (classes.num_classes, model_cfg.embed_dim):
        raise PipelineError(
            f"{EMBEDDINGS_DIR}: class embeddings are {list(class_embeddings.shape)}, expected "
            f"[{classes.num_classes}, {model_cfg.embed_dim}] for classes.file and clip.model (re-run `text_embeddings`)"
        )
    concepts, concept_class = text.concepts.float(), text.concept_class.long()
    if concepts.ndim != 2 or concepts.shape[1] != model_cfg.embed_dim or tuple(concept_class.shape) != (len(concepts),) \
            or len(concepts) == 0 or int(concept_class.min()) < 0 or int(concept_class.max()) >= classes.num_classes:
        raise PipelineError(f"{EMBEDDINGS_DIR}: concept embeddings do not match the {classes.num_classes} classes and "
                            f"embedding size {model_cfg.embed_dim} (re-run `text_embeddings`)")

    settings = {"train": {k: v for k, v in cfg.to_dict().items() if k not in NOT_FINGERPRINTED},
                "model": model_cfg.to_dict(), "processes": runtime.world_size}
    files = [MANIFEST, SPLITS_DIR, EMBEDDINGS_DIR, *CODE_PATHS]
    return TrainInputs(model_cfg=model_cfg, voc_root=Path(manifest["root"]), labeled_ids=ids["labeled"],
                       unlabeled_ids=ids["unlabeled"], val_ids=ids["val"], class_embeddings=class_embeddings,
                       concept_embeddings=concepts if cfg.guided else None,
                       concept_class=concept_class if cfg.guided else None,
                       fingerprint=ckpt.fingerprint(settings, files))


def model_api() -> ModelApi:
    from ..model.io import save_model
    from ..model.segmenter import build_model

    return ModelApi(build_model=build_model, save_model=save_model)


def launch_torchrun(params: Params, cfg: TrainConfig) -> None:
    check_multi_gpu(cfg.gpus, cfg.device)
    command = torchrun_command(params.source, cfg.gpus)
    log.info("train.gpus is %d: launching DDP with %s", cfg.gpus, " ".join(command))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise PipelineError(f"train: the {cfg.gpus} torchrun worker processes failed (exit code {result.returncode}); "
                            "see their messages above")


def run(params: Params) -> None:
    cfg = TrainConfig.from_params(params)
    if cfg.gpus > 1 and not launched_by_torchrun():
        launch_torchrun(params, cfg)
        return
    runtime = setup(cfg.device)
    try:
        if launched_by_torchrun() and runtime.world_size != cfg.gpus and runtime.is_main:
            log.info("running as %d torchrun processes (train.gpus %d is not used)", runtime.world_size, cfg.gpus)
        if cfg.batch_size % runtime.world_size:
            raise PipelineError(f"train.batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                                f"({runtime.world_size}): it is the global batch")
        inputs = load_inputs(params, cfg, runtime)
        cfg = cfg.for_split(len(inputs.labeled_ids), len(inputs.unlabeled_ids))
        if cfg.epochs is not None and runtime.is_main:
            log.info("train.iterations %d epochs: %d iterations", cfg.epochs, cfg.iterations)
        train(cfg, inputs, TrainOutputs(), runtime, model_api())
    finally:
        teardown()
