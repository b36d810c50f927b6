"""The distilled student: a MobileNetV3-Large with an LR-ASPP-style head that predicts per-pixel embeddings in the
CLIP text space and classifies them by cosine with the class text embeddings (stage `distill`).

Like the teacher, `forward(images, text_embeddings [C,E]) -> logits [B,C,H,W]`: the class set is the rows of the
text embeddings, so the same weights segment a renamed or a new class (open vocabulary), and every export and
evaluation path of the teacher takes the student unchanged.

- Backbone: torchvision's `mobilenet_v3_large` with its last stage dilated (output stride 16, as torchvision's
  LR-ASPP builds it); ImageNet weights from a local torchvision state dict (`distill.imagenet_weights`), else a
  random init that the distill metrics record.
- Head (LR-ASPP, Howard et al. 2019): the stride-16 features through a 1x1 conv gated by their global average
  (a squeeze-excitation), upsampled to stride 8 and added to a 1x1 projection of the stride-8 features; here both
  project to the embedding size E instead of to class logits.
- Logits: `scale * cos(embedding, text embedding)`, with a learned scale (CLIP's logit scale, per model).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..basics import IMAGENET_MEAN, IMAGENET_STD
from ..errors import PipelineError, first_line
from .blocks import l2_normalize

log = logging.getLogger(__name__)

FORMAT = "semivl-edge-student"
INIT_FORMAT = "semivl-edge-student-init"
BACKBONES = ("mobilenet_v3_large",)
LOW_LEVEL_STAGE = 6  # index in mobilenet_v3_large(dilated=True).features of the last stride-8 block (40 channels)
WEIGHTS_NONE = "none"
BN_MOMENTUM = 0.1


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student (saved beside its weights)."""

    embed_dim: int  # E: the CLIP text space the class embeddings live in
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    backbone: str = "mobilenet_v3_large"
    head_channels: int = 128  # LR-ASPP's inner width (torchvision: 128)
    imagenet_weights: str = WEIGHTS_NONE  # where the backbone started: none (random init) | a state dict file
    init: str = WEIGHTS_NONE  # where the whole student started: none | a student init file (save_student_init)
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    decoder: str = "vlg"  # the export stage's switch for the text-taking files: this model always takes text

    def __post_init__(self) -> None:
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)
        self.class_names = [str(n) for n in self.class_names]
        if self.backbone not in BACKBONES:
            raise PipelineError(f"distill.backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.head_channels < 8:
            raise PipelineError(f"distill.head_channels must be at least 8, got {self.head_channels}")
        if self.imagenet_weights != WEIGHTS_NONE and self.init != WEIGHTS_NONE:
            raise PipelineError(f"distill.init ({self.init}) and distill.imagenet_weights ({self.imagenet_weights}) "
                                "both set: a student starts from one of them (set the other to none)")
        if self.embed_dim < 1 or self.num_classes < 1:
            raise PipelineError(f"student config: embed_dim {self.embed_dim} and num_classes {self.num_classes} "
                                "must be positive")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pixel_mean"], data["pixel_std"] = list(self.pixel_mean), list(self.pixel_std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise PipelineError(f"student config: unknown key(s) {', '.join(unknown)}")
        return cls(**data)


class LRASPPEmbeddingHead(nn.Module):
    """(stride-8 features [B,L,h8,w8], stride-16 features [B,H,h16,w16]) -> embeddings [B,E,h8,w8]."""

    def __init__(self, low_channels: int, high_channels: int, inner: int, embed_dim: int):
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inner, 1, bias=False), nn.BatchNorm2d(inner),
                                 nn.ReLU(inplace=True))
        self.gate = nn.Conv2d(high_channels, inner, 1)
        self.low_proj = nn.Conv2d(low_channels, embed_dim, 1)
        self.high_proj = nn.Conv2d(inner, embed_dim, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate(high.mean(dim=(2, 3), keepdim=True)))
        x = self.cbr(high) * gate
        x = F.interpolate(x, size=[low.shape[-2], low.shape[-1]], mode="bilinear", align_corners=False)
        return self.low_proj(low) + self.high_proj(x)


class LanguageStudent(nn.Module):
    """Images normalised with cfg.pixel_mean/std [B,3,H,W] + class text embeddings [C,E] -> logits [B,C,H,W]."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        from torchvision.models import mobilenet_v3_large

        self.cfg = cfg
        features = mobilenet_v3_large(weights=None, dilated=True).features
        self.low = features[: LOW_LEVEL_STAGE + 1]
        self.high = features[LOW_LEVEL_STAGE + 1:]
        low_channels = features[LOW_LEVEL_STAGE].out_channels
        high_channels = features[-1].out_channels
        self.head = LRASPPEmbeddingHead(low_channels, high_channels, cfg.head_channels, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # scale = exp(.), learned; CLIP's form
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                # torchvision's 0.01 suits ImageNet's long schedule; after a few hundred steps its running statistics
                # still remember the random init, and the eval-mode student predicted background everywhere
                module.momentum = BN_MOMENTUM

    def embed(self, images: Tensor) -> Tensor:
        """Unit-length pixel embeddings [B,E,H/8,W/8] in the CLIP text space."""
        low = self.low(images)
        return l2_normalize(self.head(low, self.high(low)), dim=1)

    def grid_logits(self, embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        """Cosine logits [B,C,h,w] of unit embeddings [B,E,h,w] against the (unit) class embeddings [C,E]."""
        return torch.einsum("behw,ce->bchw", embeddings, text_embeddings) * self.logit_scale.exp()

    def classify(self, embeddings: Tensor, text_embeddings: Tensor, out_size: tuple[int, int]) -> Tensor:
        """The cosine logits upsampled to [B,C,*out_size]."""
        logits = self.grid_logits(embeddings, text_embeddings)
        return F.interpolate(logits, size=[out_size[0], out_size[1]], mode="bilinear", align_corners=False)

    def forward(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        return self.classify(self.embed(images), text_embeddings, (images.shape[-2], images.shape[-1]))


def load_backbone_weights(student: LanguageStudent, path: str) -> None:
    """A torchvision `mobilenet_v3_large` state dict (safetensors, or a weights-only .pth) into the backbone,
    strictly (its classifier dropped). A file that does not fit stops with a one-line error naming it."""
    from .clip import read_state_dict

    state = read_state_dict(path)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    backbone = nn.Sequential(*student.low, *student.high)
    try:
        backbone.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        raise PipelineError(f"distill.imagenet_weights {path}: not a torchvision mobilenet_v3_large state dict "
                            f"({first_line(exc)[:160]})") from None


def _init_shape(cfg: StudentConfig) -> dict[str, str]:
    """What a student init file must agree on (the class set is not part of the weights)."""
    return {"backbone": cfg.backbone, "embed_dim": str(cfg.embed_dim), "head_channels": str(cfg.head_channels)}


def save_student_init(path, student: LanguageStudent, provenance: str) -> None:
    """The whole student's weights in float16 (half the size; loaded back as float32), for `distill.init`."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().cpu()
             for k, v in student.state_dict().items()}
    save_file(state, str(path), metadata={"format": INIT_FORMAT, **_init_shape(student.cfg), "provenance": provenance})


def load_student_init(student: LanguageStudent, path: str) -> None:
    """A student init file (save_student_init) into the whole student, strictly; a file that does not fit stops
    with a one-line error naming it and what differs."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise PipelineError(f"distill.init {path}: not a readable safetensors file ({first_line(exc)[:120]})") from None
    if metadata.get("format") != INIT_FORMAT:
        raise PipelineError(f"distill.init {path}: not a student init file (made by semivl-edge student-asset)")
    wrong = [f"{k} {metadata.get(k)} (this student: {v})" for k, v in _init_shape(student.cfg).items()
             if metadata.get(k) != v]
    if wrong:
        raise PipelineError(f"distill.init {path}: made for another student: " + ", ".join(wrong))
    reference = student.state_dict()
    student.load_state_dict({k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()},
                            strict=True)


def build_student(cfg: StudentConfig, *, load_pretrained: bool = True) -> LanguageStudent:
    """A student in train mode: random init from torch's current RNG, then the init file or the ImageNet backbone
    if one is given."""
    student = LanguageStudent(cfg)
    if load_pretrained and cfg.init != WEIGHTS_NONE:
        load_student_init(student, cfg.init)
    if load_pretrained and cfg.imagenet_weights != WEIGHTS_NONE:
        load_backbone_weights(student, cfg.imagenet_weights)
    return student.train()


def describe_student(cfg: StudentConfig) -> str:
    if cfg.init != WEIGHTS_NONE:
        weights = f"from {cfg.init} (CLIP dense-map pretraining)"
    elif cfg.imagenet_weights != WEIGHTS_NONE:
        weights = f"ImageNet weights {cfg.imagenet_weights}"
    else:
        weights = "random init (no distill.init or distill.imagenet_weights)"
    return f"{cfg.backbone} + LR-ASPP embedding head, {weights}"
