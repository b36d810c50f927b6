"""Helpers for the train tests: a tiny VOC root, tiny model configs and training inputs (no tests here)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from semivl_edge.data.classes import load_classes
from semivl_edge.data.synthetic import SyntheticConfig, generate
from semivl_edge.data.voc import VOCLayout, read_ids
from semivl_edge.evaluation.inference import InferenceConfig
from semivl_edge.model.config import ModelConfig
from semivl_edge.train.config import TrainConfig
from semivl_edge.train.distributed import Runtime
from semivl_edge.train.loop import ModelApi, TrainInputs

from conftest import model_config, train_config

REPO = Path(__file__).resolve().parents[1]
CLASSES = load_classes(REPO / "data" / "classes" / "voc.yaml")
CROP = 32


def tiny_model_cfg(**changes) -> ModelConfig:
    settings = dict(image_size=CROP, decoder_dim=16, class_names=CLASSES.names)
    settings.update(changes)
    return model_config(**settings)


def tiny_train_cfg(**changes) -> TrainConfig:
    settings = dict(method="semivl", iterations=4, batch_size=2, crop_size=CROP, base_size=CROP, device="cpu",
                    amp="none", workers=0, eval_every=2,
                    validation=InferenceConfig(mode="sliding", short_side=CROP, crop_size=CROP, stride=CROP),
                    checkpoint_every=2, lr=1e-3)
    settings.update(changes)
    return train_config(**settings)


def cpu_runtime() -> Runtime:
    return Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def make_voc_root(folder: Path) -> Path:
    """A small synthetic VOC root (6 labeled-pool, 12 train_aug, 3 val images, long side 48 px)."""
    root = folder / "VOC2012"
    generate(root, CLASSES, SyntheticConfig(seed=0, train=6, train_aug=12, val=3, long_side=48))
    return root


def embeddings(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def tiny_inputs(root: Path, model_cfg: ModelConfig | None = None, fingerprint: str = "test") -> TrainInputs:
    model_cfg = model_cfg or tiny_model_cfg()
    layout = VOCLayout(root)
    train = read_ids(layout.list_path("train"))
    pool = read_ids(layout.list_path("train_aug"))
    concepts, owners = CLASSES.flat_concepts()
    return TrainInputs(
        model_cfg=model_cfg, voc_root=root, labeled_ids=train[:4], unlabeled_ids=[i for i in pool if i not in train[:4]],
        val_ids=read_ids(layout.list_path("val")), class_embeddings=embeddings(CLASSES.num_classes, model_cfg.embed_dim, 1),
        concept_embeddings=embeddings(len(concepts), model_cfg.embed_dim, 2), concept_class=torch.tensor(owners),
        fingerprint=fingerprint,
    )


def model_api() -> ModelApi:
    from semivl_edge.model.segmenter import build_model
    from semivl_edge.model.io import save_model

    return ModelApi(build_model=build_model, save_model=save_model)
