"""The `train` parameters as one validated object.

Three training methods, chosen by `train.method`; the architecture is chosen separately by `model.*` and the
class texts by `classes.definitions`, so that every SemiVL strategy can be switched on and off on its own and
the three methods compare on the same network by default.

- `supervised`: cross-entropy on the labeled batch only.
- `unimatch`:   + consistency training on unlabeled images (UniMatch: pseudo-labels of a weak view, two strong
                CutMix views and a feature-perturbed view), no language guidance loss.
- `semivl`:     `unimatch` + dense CLIP guidance (a frozen copy of the initial CLIP labels confident pixels).

The paper's ablation (SemiVL Table 4, VOC) as `dvc exp run -S ...` settings, mapped as the official code does:
the decoder compares with the class names, the dense CLIP guidance first labels pixels by the class names too, and
"+ class definitions" switches only the guidance texts to the class file's concept lists (`semivl-edge study
--ablation` runs these rows):

| paper row                      | train.method | model.encoder | model.spatial_finetune | model.decoder | classes.guidance |
|--------------------------------|--------------|---------------|------------------------|---------------|------------------|
| UniMatch (ViT)                 | unimatch     | imagenet_vit  | false                  | plain         | -                |
| + CLIP initialisation          | unimatch     | clip          | false                  | plain         | -                |
| + spatial fine-tuning          | unimatch     | clip          | true                   | plain         | -                |
| + language-guided decoder      | unimatch     | clip          | true                   | vlg           | -                |
| + dense CLIP guidance          | semivl       | clip          | true                   | vlg           | names            |
| + class definitions (= SemiVL) | semivl       | clip          | true                   | vlg           | concepts         |

with `classes.definitions: names` in every row. The paper's UniMatch (ViT) is an ImageNet ViT-B/16 fully fine-tuned
at lr x0.001 (`model.imagenet_weights`, a torchvision vit_b_16 state dict; the study then sets the x0.001); without
weights it is a random init of the same shape and learns at params.yaml's rate. `classes.definitions` chooses the
texts the decoder compares with (the embedded default uses the guideline sentences); `classes.guidance` the texts the
dense CLIP guidance labels pixels by (data/text_embeddings/concept_embeddings.safetensors). The embedded default keeps the
full SemiVL architecture for all three methods.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import PipelineError
from ..evaluation.inference import InferenceConfig
from ..params import Params

METHODS = ("supervised", "unimatch", "semivl")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16")
SAVE_CHOICES = ("best", "final")


def parse_iterations(value, source: str) -> tuple[int, int | None]:
    """train.iterations: a count N, or "E epochs" (the official rule: E passes over the set a step walks through,
    resolved from the split by TrainConfig.for_split). Returns (iterations, epochs); iterations 0 until resolved."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    if isinstance(value, str):
        count, _, unit = value.strip().partition(" ")
        if unit.strip() == "epochs" and count.isdigit() and int(count) >= 1:
            return 0, int(count)
    raise PipelineError(f'{source}: train.iterations must be an integer >= 1 or "<E> epochs" (e.g. "80 epochs"), '
                        f"got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    method: str
    iterations: int  # 0 while `epochs` waits for the split (for_split)
    batch_size: int  # labeled images per step over all processes; the unlabeled batches have the same size
    crop_size: int
    base_size: int  # short side before the random rescale (paper: 512, with crop 512)
    scale_range: tuple[float, float]
    seed: int
    device: str
    gpus: int
    amp: str
    workers: int
    eval_every: int
    validation: InferenceConfig  # params eval.*
    checkpoint_every: int
    save: str
    # optimisation
    lr: float
    weight_decay: float
    encoder_lr_mult: float
    decoder_lr_mult: float
    decoder_norm_decay: bool  # weight decay on the decoder's norm layers too (the official optimiser's effect)
    poly_power: float
    warmup_iterations: int  # linear warm-up of the learning rate (SemiVL: 0 on VOC)
    # consistency training
    conf_threshold: float
    fp_dropout: float
    cutmix_prob: float
    # dense CLIP guidance
    guidance_lambda: float  # at the first iteration; decays linearly to 0 at the last
    guidance_zeta: float
    guidance_temperature: float
    epochs: int | None = None  # train.iterations given as "E epochs"

    def for_split(self, labeled: int, unlabeled: int) -> "TrainConfig":
        """Iterations from epochs, as the official code counts them: E passes over the unlabeled set in batches of
        train.batch_size for unimatch / semivl (80 epochs at VOC's 92 labels: 80 x (10490 // 8) = 104,880), over
        the labeled set for supervised. A count given directly is kept."""
        if self.epochs is None:
            return self
        pool = unlabeled if self.semi_supervised else labeled
        return self.replace(iterations=self.epochs * max(1, pool // self.batch_size))

    @property
    def semi_supervised(self) -> bool:
        return self.method in ("unimatch", "semivl")

    @property
    def guided(self) -> bool:
        return self.method == "semivl"

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["scale_range"] = list(self.scale_range)
        return data

    @classmethod
    def from_params(cls, params: Params) -> "TrainConfig":
        p = params
        scale = p.get_list("train.scale_range", float, min_len=2)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise PipelineError(f"{p.source}: train.scale_range must be [low, high] with 0 < low <= high, got {scale!r}")
        iterations, epochs = parse_iterations(p.raw("train.iterations"), p.source)
        config = cls(
            method=p.get_str("train.method", choices=METHODS),
            iterations=iterations,
            epochs=epochs,
            batch_size=p.get_int("train.batch_size", min=1),
            crop_size=p.get_int("train.crop_size", min=16),
            base_size=p.get_int("train.base_size", min=8),
            scale_range=(float(scale[0]), float(scale[1])),
            seed=p.get_int("train.seed", min=0),
            device=p.get_str("train.device", choices=DEVICES),
            gpus=p.get_int("train.gpus", min=1),
            amp=p.get_str("train.amp", choices=AMP_MODES),
            workers=p.get_int("train.workers", min=0),
            eval_every=p.get_int("train.eval_every", min=1),
            validation=InferenceConfig.from_params(p),
            checkpoint_every=p.get_int("train.checkpoint_every", min=1),
            save=p.get_str("train.save", choices=SAVE_CHOICES),
            lr=p.get_float("train.optim.lr", above=0.0),
            weight_decay=p.get_float("train.optim.weight_decay", min=0.0),
            encoder_lr_mult=p.get_float("train.optim.encoder_lr_mult", min=0.0),
            decoder_lr_mult=p.get_float("train.optim.decoder_lr_mult", min=0.0),
            decoder_norm_decay=p.get_bool("train.optim.decoder_norm_decay"),
            poly_power=p.get_float("train.optim.poly_power", min=0.0),
            warmup_iterations=p.get_int("train.optim.warmup_iterations", min=0),
            conf_threshold=p.get_float("train.unimatch.conf_threshold", min=0.0, max=1.0),
            fp_dropout=p.get_float("train.unimatch.fp_dropout", min=0.0, max=0.99),
            cutmix_prob=p.get_float("train.unimatch.cutmix_prob", min=0.0, max=1.0),
            guidance_lambda=p.get_float("train.guidance.lambda", min=0.0),
            guidance_zeta=p.get_float("train.guidance.zeta", min=0.0, max=1.0),
            guidance_temperature=p.get_float("train.guidance.temperature", above=0.0),
        )
        return config
