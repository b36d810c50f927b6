"""The training loop: supervised, UniMatch and SemiVL steps, validation, checkpoints, curves, outputs.

One iteration of `unimatch` / `semivl` (after UniMatch, Yang et al. 2023, and SemiVL, Hoyer et al. 2024):
1. the CutMix partner batch (a second, independently ordered unlabeled batch) is predicted without gradient
   in eval mode; its strong views are pasted into this batch's strong views inside the CutMix boxes;
2. one forward pass of [labeled, weak, strong1, strong2] through the encoder; the decoder sees the clean
   features of all of them plus the weak view's features after dropout2d (feature perturbation);
3. pseudo-labels are the detached weak predictions (the partner's inside the CutMix boxes) kept where the
   confidence reaches train.unimatch.conf_threshold;
4. loss = (L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2, and for `semivl`
   + lambda (0.25 DC_s1 + 0.25 DC_s2 + 0.5 DC_fp) with the dense CLIP labels of the weak / partner images,
   lambda decaying linearly from train.guidance.lambda to 0.
`supervised` is step 4 with L_sup alone.
"""
from __future__ import annotations

import contextlib
import logging
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..atomic import write_json, write_metrics
from ..data.voc import VOCLayout
from ..errors import PipelineError
from ..model.segmenter import describe_encoder
from . import checkpoint as ckpt
from . import losses, optim
from .audit import TargetAudit
from .augment import cutmix
from .config import TrainConfig
from .data import (
    STREAM_LABELED,
    STREAM_PARTNER,
    STREAM_UNLABELED,
    CropSpec,
    LabeledCrops,
    StepBatchSampler,
    UnlabeledViews,
    count_masks,
    make_loader,
)
from .distributed import Runtime, barrier, gather_to_main
from .guidance import DenseClipGuidance, initial_clip_copy
from .progress import logs_above_bar
from .validate import evaluate, load_val_items

log = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """What the stage reads, resolved: the model config, data, text embeddings and their fingerprint."""

    model_cfg: object  # semivl_edge.model.ModelConfig
    voc_root: Path
    labeled_ids: list[str]
    unlabeled_ids: list[str]
    val_ids: list[str]
    class_embeddings: torch.Tensor  # [C, E]
    concept_embeddings: torch.Tensor | None = None  # [K, E], semivl only
    concept_class: torch.Tensor | None = None  # [K]
    fingerprint: str = ""


@dataclass
class TrainOutputs:
    root: Path = Path(".")

    @property
    def model_dir(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "checkpoints"

    @property
    def live_dir(self) -> Path:
        return self.root / "reports" / "train"


@dataclass
class ModelApi:
    """The model package's functions (injected so tests can train a small stand-in)."""

    build_model: Callable
    save_model: Callable


class StepNetwork(nn.Module):
    """All predictions of one training step in ONE forward call (what DistributedDataParallel wraps)."""

    def __init__(self, segmenter: nn.Module, text_embeddings: torch.Tensor, fp_dropout: float):
        super().__init__()
        self.segmenter = segmenter
        self.register_buffer("text_embeddings", text_embeddings, persistent=False)
        self.fp_dropout = fp_dropout

    def forward(self, labeled: torch.Tensor, weak: torch.Tensor | None = None, strong: torch.Tensor | None = None):
        size = tuple(labeled.shape[-2:])
        if weak is None:
            return (self.segmenter(labeled, self.text_embeddings),)
        n_labeled, n_weak, n_strong = labeled.shape[0], weak.shape[0], strong.shape[0]
        encoded = self.segmenter.encode(torch.cat([labeled, weak, strong]))
        features = [f.split([n_labeled, n_weak, n_strong]) for f in encoded]
        weak_features = tuple(weak_part for _, weak_part, _ in features)
        # The weak view's clean prediction only makes pseudo-labels, so no gradient flows from it: decoded without
        # a graph. (The official code decodes it with the rest: the same gradients, a 14 % slower step network.)
        with torch.no_grad():
            pred_weak = self.segmenter.decode(weak_features, self.text_embeddings, size)
        perturbed = [F.dropout2d(f, self.fp_dropout, training=True) for f in weak_features]
        decoder_in = tuple(torch.cat([x, s, p]) for (x, _, s), p in zip(features, perturbed))
        logits = self.segmenter.decode(decoder_in, self.text_embeddings, size)
        pred_labeled, pred_strong, pred_perturbed = logits.split([n_labeled, n_strong, n_weak])
        return pred_labeled, pred_weak, pred_strong, pred_perturbed  # strong: both views


def strong_view_targets(weak: tuple, partner: tuple, boxes) -> list[tuple]:
    """The (pseudo-label, confidence, ignore map) targets of each strong view: the weak image's `weak` triple,
    and the `partner` image's inside that view's CutMix box, where the partner's pixels were pasted."""
    return [tuple(cutmix(own, pasted, box) for own, pasted in zip(weak, partner)) for box in boxes]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    def __init__(self, cfg: TrainConfig, inputs: TrainInputs, outputs: TrainOutputs, runtime: Runtime, api: ModelApi):
        if cfg.iterations < 1:
            raise ValueError("train.iterations in epochs must be resolved for the split first (TrainConfig.for_split)")
        self.cfg, self.inputs, self.outputs, self.runtime, self.api = cfg, inputs, outputs, runtime, api
        self.device = runtime.device
        self.use_amp = cfg.amp == "bf16" and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
        mcfg = inputs.model_cfg
        self.mean, self.std = tuple(mcfg.pixel_mean), tuple(mcfg.pixel_std)

        # Same initial weights on every rank and in every session (a resumed run rebuilds, then loads).
        seed_everything(cfg.seed)
        self.segmenter = api.build_model(mcfg).to(self.device)
        self.text = inputs.class_embeddings.float().to(self.device)
        self.guidance = None
        if cfg.guided:
            if mcfg.encoder != "clip":
                raise PipelineError(f"train.method {cfg.method}: dense CLIP guidance needs model.encoder clip")
            if inputs.concept_embeddings is None:
                raise ValueError("train.method semivl needs concept embeddings")
            clip = initial_clip_copy(self.segmenter, mcfg, api.build_model).to(self.device)
            self.guidance = DenseClipGuidance(clip, inputs.concept_embeddings.to(self.device),
                                              inputs.concept_class.to(self.device), self.text.shape[0],
                                              cfg.guidance_temperature, cfg.guidance_zeta)
        self.optimizer = optim.build_optimizer(self.segmenter, cfg.lr, cfg.weight_decay, cfg.encoder_lr_mult,
                                               cfg.decoder_lr_mult, decoder_norm_decay=cfg.decoder_norm_decay)
        network = StepNetwork(self.segmenter, self.text, cfg.fp_dropout)
        if runtime.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(network, device_ids=device_ids, broadcast_buffers=False,
                                              find_unused_parameters=True)
        self.network = network
        seed_everything(cfg.seed + 1000 * runtime.rank + 1)  # training randomness (dropout) differs per rank
        self.progress = ckpt.Progress()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.audit = TargetAudit()

    # -- one iteration ---------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()

    def _to(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, iteration: int, labeled: dict, unlabeled: dict | None = None,
                   partner: dict | None = None) -> dict[str, float]:
        """One optimisation step; returns the loss terms and schedule values as floats."""
        cfg = self.cfg
        lr_factor = optim.poly_factor(iteration, cfg.iterations, cfg.poly_power, cfg.warmup_iterations)
        optim.set_learning_rates(self.optimizer, lr_factor)
        self.segmenter.train()
        labeled = self._to(labeled)
        terms: dict[str, torch.Tensor | float] = {}
        if not cfg.semi_supervised:
            with self.autocast():
                (pred_x,) = self.network(labeled["image"])
            loss = terms["loss_sup"] = losses.supervised_loss(pred_x, labeled["mask"])
        else:
            loss = self._semi_supervised_loss(iteration, labeled, self._to(unlabeled), self._to(partner), terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {"loss": float(loss.detach())}
        out.update({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()})
        for group in self.optimizer.param_groups:
            if not group["name"].endswith("_norm"):
                out[f"lr_{group['name']}"] = group["lr"]
        return out

    def _semi_supervised_loss(self, iteration: int, labeled: dict, u: dict, p: dict, terms: dict) -> torch.Tensor:
        cfg = self.cfg
        strong1 = cutmix(u["strong1"], p["strong1"], u["box1"])
        strong2 = cutmix(u["strong2"], p["strong2"], u["box2"])
        with torch.no_grad(), self.autocast():
            self.segmenter.eval()
            pred_partner = self.segmenter(p["weak"], self.text)
            self.segmenter.train()
            if self.guidance is not None:
                clip_w, clip_p = self.guidance(torch.cat([u["weak"], p["weak"]])).chunk(2)

        with self.autocast():
            pred_x, pred_w, pred_s, pred_fp = self.network(labeled["image"], u["weak"], torch.cat([strong1, strong2]))
        pred_s1, pred_s2 = pred_s.chunk(2)

        conf_w, label_w = losses.pseudo_labels(pred_w)
        conf_p, label_p = losses.pseudo_labels(pred_partner)
        ignore_w, ignore_p = u["ignore"], p["ignore"]
        targets = strong_view_targets((label_w, conf_w, ignore_w), (label_p, conf_p, ignore_p), (u["box1"], u["box2"]))
        thr = cfg.conf_threshold
        sup = losses.supervised_loss(pred_x, labeled["mask"])
        s1 = losses.confident_consistency_loss(pred_s1, *targets[0], thr)
        s2 = losses.confident_consistency_loss(pred_s2, *targets[1], thr)
        fp = losses.confident_consistency_loss(pred_fp, label_w, conf_w, ignore_w, thr)
        terms.update(loss_sup=sup, loss_s1=s1, loss_s2=s2, loss_fp=fp)
        valid = ignore_w != 255
        confident = (conf_w >= thr) & valid
        terms["confident_ratio"] = confident.sum() / valid.sum().clamp(min=1)
        terms.update(self.audit.step("pseudo_label", label_w.masked_fill(~confident, 255), u["truth"]))
        if self.guidance is None:
            return losses.combine_losses(sup, s1, s2, fp)

        clip_w = clip_w.masked_fill(ignore_w == 255, 255)
        clip_p = clip_p.masked_fill(ignore_p == 255, 255)
        terms.update(self.audit.step("guidance", clip_w, u["truth"]))
        dc_s1 = losses.guidance_loss(pred_s1, cutmix(clip_w, clip_p, u["box1"]))
        dc_s2 = losses.guidance_loss(pred_s2, cutmix(clip_w, clip_p, u["box2"]))
        dc_fp = losses.guidance_loss(pred_fp, clip_w)
        weight = optim.linear_decay(cfg.guidance_lambda, iteration, cfg.iterations)
        terms.update(loss_dc_s1=dc_s1, loss_dc_s2=dc_s2, loss_dc_fp=dc_fp, guidance_lambda=weight,
                     guidance_ratio=(clip_w != 255).float().mean())
        return losses.combine_losses(sup, s1, s2, fp, dc_s1, dc_s2, dc_fp, weight)

    # -- data --------------------------------------------------------------------------------------------------
    def loaders(self, start: int) -> list:
        cfg, rt, inputs = self.cfg, self.runtime, self.inputs
        layout = VOCLayout(inputs.voc_root)
        spec = CropSpec(cfg.crop_size, cfg.base_size, cfg.scale_range, self.mean, self.std)
        num_classes = self.text.shape[0]
        pin = self.device.type == "cuda"

        def loader(dataset, stream):
            sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, stream, start, cfg.iterations,
                                       rt.rank, rt.world_size)
            return make_loader(dataset, sampler, cfg.workers, cfg.seed * 31 + stream, pin)

        keep = cfg.workers == 0  # decoded files stay in memory in the training process only (train/data.py)
        out = [loader(LabeledCrops(layout, inputs.labeled_ids, spec, num_classes, keep), STREAM_LABELED)]
        if cfg.semi_supervised:
            unlabeled = UnlabeledViews(layout, inputs.unlabeled_ids, spec, cfg.cutmix_prob, num_classes, keep)
            out += [loader(unlabeled, STREAM_UNLABELED), loader(unlabeled, STREAM_PARTNER)]
        return out

    # -- checkpoints -------------------------------------------------------------------------------------------
    def resume(self) -> int:
        state = ckpt.load_latest(self.outputs.checkpoints, self.inputs.fingerprint, self.runtime.world_size)
        if state is None:
            return 0
        self.segmenter.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        ckpt.restore_rng(state.rng[self.runtime.rank], self.device)
        self.progress = state.progress
        self.best_weights = state.best_model
        return self.progress.step

    def save_checkpoint(self) -> None:
        rng = gather_to_main(ckpt.capture_rng(self.device), self.runtime)
        if self.runtime.is_main:
            path = ckpt.save_checkpoint(self.outputs.checkpoints, self.inputs.fingerprint, self.progress,
                                        self.segmenter, self.optimizer, self.best_weights, rng)
            log.info("checkpoint at iteration %d: %s", self.progress.step, path)
        barrier(self.runtime)

    # -- the run -----------------------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> dict | None:
        """Train to train.iterations (resuming a matching checkpoint) and write the outputs on rank 0.

        `stop_after` ends the session after that many completed iterations without writing outputs, as if the
        process had been killed there (used to test resuming). Returns the metrics, or None when stopped.
        """
        cfg, rt, inputs = self.cfg, self.runtime, self.inputs
        main = rt.is_main
        start = self.resume()
        if main:
            if start == 0 and ckpt.step_dirs(self.outputs.checkpoints):
                ckpt.clear(self.outputs.checkpoints)  # stale: another configuration
            log.info("method %s on %s%s; %d labeled, %d unlabeled, %d val images; %d iterations, batch %d, crop %d",
                     cfg.method, rt.label, ", bf16 autocast" if self.use_amp else "", len(inputs.labeled_ids),
                     len(inputs.unlabeled_ids), len(inputs.val_ids), cfg.iterations, cfg.batch_size, cfg.crop_size)
            if cfg.amp == "bf16" and not self.use_amp:
                log.info("train.amp bf16 applies to CUDA only: training in float32")
            log.info("trainable parameters: encoder %d, decoder %d",
                     optim.trainable(self.segmenter.encoder_parameters()), optim.trainable(self.segmenter.decoder_parameters()))
            log.info("resuming from the checkpoint at iteration %d" % start if start else "starting from iteration 0")
        layout = VOCLayout(inputs.voc_root)
        if main and cfg.semi_supervised:
            masks = count_masks(layout, inputs.unlabeled_ids)
            log.info("target audit: %d of %d unlabeled images have a mask, used only to score the pseudo-labels%s "
                     "(never trained on)", masks, len(inputs.unlabeled_ids), " and CLIP labels" if cfg.guided else "")
        val_items = load_val_items(layout, inputs.val_ids[rt.rank::rt.world_size], self.text.shape[0])
        live = self._open_live() if main else None

        loaders = self.loaders(start)
        with logs_above_bar():
            finished = self._loop(loaders, start, val_items, live, stop_after)
        if not finished:
            return None
        metrics = self._finish(live)
        barrier(self.runtime)
        return metrics

    def _loop(self, loaders, start: int, val_items, live, stop_after: int | None) -> bool:
        """Iterations start..train.iterations; False when stopped early by `stop_after`."""
        cfg, main = self.cfg, self.runtime.is_main
        bar = tqdm(total=cfg.iterations, initial=start, desc=f"train {cfg.method}", disable=not main,
                   dynamic_ncols=True, mininterval=1.0)
        session_start = time.perf_counter()
        elapsed_before = self.progress.elapsed_s
        step = start
        try:
            for iteration, batches in zip(range(start, cfg.iterations), zip(*loaders)):
                row = self.train_step(iteration, *batches)
                step = iteration + 1
                if step % cfg.eval_every == 0 or step == cfg.iterations:
                    row["val_miou"] = self._validate(val_items, step)
                self.progress.step = step
                self.progress.elapsed_s = elapsed_before + time.perf_counter() - session_start
                self.progress.history.append({"step": step, "metrics": row})
                if live is not None:
                    self._log_live(live, step, row)
                bar.update(1)
                bar.set_postfix(self._postfix(row, self.progress.last_miou), refresh=False)
                if step % cfg.checkpoint_every == 0 and step < cfg.iterations:
                    self.save_checkpoint()
                if stop_after is not None and step >= stop_after and step < cfg.iterations:
                    log.info("stopping after iteration %d as requested (checkpoint kept)", step)
                    return False
        finally:
            bar.close()
        if step < cfg.iterations:
            raise RuntimeError(f"the data stream ended at iteration {step} of {cfg.iterations}")
        return True

    def _validate(self, val_items, step: int) -> float:
        miou = evaluate(self.segmenter, self.text, val_items, self.cfg.validation, self.mean, self.std, self.runtime,
                        self.use_amp)
        self.progress.last_miou = miou
        if self.progress.best_miou is None or miou > self.progress.best_miou:
            self.progress.best_miou, self.progress.best_step = miou, step
            if self.runtime.is_main:
                self.best_weights = ckpt.state_dict_to_cpu(self.segmenter)
        if self.runtime.is_main:
            log.info("iteration %d: val mIoU %.2f (best %.2f at iteration %d)", step, miou, self.progress.best_miou,
                     self.progress.best_step)
            targets = self.audit.summary()
            if targets:
                log.info("unlabeled targets since the last evaluation: %s", targets)
        return miou

    @staticmethod
    def _postfix(row: dict, last_miou: float | None) -> dict:
        shown = {"loss": f"{row['loss']:.3f}"}
        for key in ("loss_sup", "loss_s1", "loss_s2", "loss_fp", "loss_dc_fp"):
            if key in row:
                shown[key.replace("loss_", "")] = f"{row[key]:.3f}"
        shown["val_miou"] = "-" if last_miou is None else f"{last_miou:.1f}"
        return shown

    # -- DVCLive curves ------------------------------------------------------------------------------------------
    def _open_live(self):
        from dvclive import Live

        live = Live(dir=str(self.outputs.live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=False)
        for entry in self.progress.history:  # a resumed run re-logs the curves of the sessions before
            self._log_live(live, entry["step"], entry["metrics"])
        return live

    @staticmethod
    def _log_live(live, step: int, row: dict) -> None:
        live.step = step
        for key, value in row.items():
            name = "val/miou" if key == "val_miou" else f"train/{key}"
            live.log_metric(name, value, plot=True)

    # -- outputs -------------------------------------------------------------------------------------------------
    def _finish(self, live) -> dict | None:
        cfg, rt = self.cfg, self.runtime
        if not rt.is_main:
            return None
        if cfg.save == "best" and self.best_weights is not None:
            self.segmenter.load_state_dict(self.best_weights)
        self.segmenter.eval()
        self.api.save_model(self.outputs.model_dir, self.segmenter, self.inputs.model_cfg, self.inputs.class_embeddings)
        iterations, mcfg = cfg.iterations, self.inputs.model_cfg
        wall = self.progress.elapsed_s
        images_per_step = cfg.batch_size * (3 if cfg.semi_supervised else 1)  # labeled + unlabeled + partner
        metrics = {
            "method": cfg.method,
            "encoder": describe_encoder(mcfg),
            "miou": round(self.progress.best_miou, 4),
            "best_iteration": self.progress.best_step,
            "miou_final": round(self.progress.last_miou, 4),
            "saved_model": cfg.save,
            "iterations": iterations,
            "labeled_images": len(self.inputs.labeled_ids),
            "unlabeled_images": len(self.inputs.unlabeled_ids) if cfg.semi_supervised else 0,
            "val_images": len(self.inputs.val_ids),
            "wall_time_s": round(wall, 2),
            "seconds_per_iteration": round(wall / iterations, 4),
            "images_per_second": round(images_per_step * iterations / wall, 3) if wall > 0 else 0.0,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "device": rt.label,
        }
        write_metrics("train", metrics, root=self.outputs.root)
        if live is not None:
            live.end()
        ckpt.clear(self.outputs.checkpoints)
        write_json(self.outputs.checkpoints / ckpt.COMPLETED_FILE,
                   {"completed": True, "fingerprint": self.inputs.fingerprint, "iterations": iterations,
                    "miou": metrics["miou"]})
        log.info("val mIoU %.2f (best, iteration %s; final %.2f); %s model saved to %s; %.1f s, %.2f s/iteration",
                 metrics["miou"], metrics["best_iteration"], metrics["miou_final"], cfg.save, self.outputs.model_dir,
                 wall, wall / iterations)
        return metrics


def train(cfg: TrainConfig, inputs: TrainInputs, outputs: TrainOutputs, runtime: Runtime, api: ModelApi,
          stop_after: int | None = None) -> dict | None:
    return Trainer(cfg, inputs, outputs, runtime, api).run(stop_after=stop_after)
