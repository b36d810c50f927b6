"""ModelConfig: everything needed to rebuild a SemiVL segmenter (saved beside its weights as JSON).

The fields that are parameters have no defaults here: they come from params.yaml (`model_config_from_params`)
or from a saved model's JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..basics import IMAGENET_MEAN, IMAGENET_STD
from ..errors import PipelineError

DECODERS = ("vlg", "plain")
ENCODERS = ("clip", "imagenet_vit")  # imagenet_vit: the UniMatch(ViT) baseline's ImageNet ViT (model/imagenet_vit.py)


@dataclass
class ModelConfig:
    clip_model: str  # open_clip ViT name (ViT-B-16 in the paper)
    clip_pretrained: str  # none | open_clip tag | local checkpoint file
    encoder: str  # clip (SemiVL) | imagenet_vit (the UniMatch(ViT) baseline; shaped like clip_model's vision tower)
    imagenet_weights: str  # encoder imagenet_vit: none (random init) | a torchvision ViT state dict file
    image_size: int  # training crop: the position embedding is resized to it
    clip_init: bool  # strategy 1: start the encoder from CLIP (false: random re-init, ablation)
    spatial_finetune: bool  # strategy 2: train only attention projections + position embedding
    decoder: str  # strategy 3: vlg (language-guided) | plain (fixed classes, no text)
    decoder_dim: int  # d of the decoder (paper: 128)
    skip_blocks: tuple[int, int]  # encoder blocks whose value-path features feed the decoder skips
    align_corners: bool  # the decoder's bilinear upsampling (official code: true; model.align_corners)
    num_classes: int  # output classes of the plain decoder; the VLG decoder takes any number
    class_names: list[str] = field(default_factory=list)
    clip_quick_gelu: bool = False  # CLIP's MLP activation: QuickGELU (OpenAI's weights) or GELU; clip.quick_gelu resolved
    embed_dim: int | None = None  # channels of the dense map; filled from the open_clip config when None
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN  # inputs are normalised with these (0..1 scale)
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.skip_blocks = tuple(int(b) for b in self.skip_blocks)
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)
        self.class_names = [str(n) for n in self.class_names]
        if self.encoder not in ENCODERS:
            raise PipelineError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.encoder == "imagenet_vit" and (self.decoder != "plain" or self.spatial_finetune):
            raise PipelineError("model.encoder imagenet_vit has no text space and is fully fine-tuned: it needs "
                                "model.decoder plain and model.spatial_finetune false")
        if self.decoder not in DECODERS:
            raise PipelineError(f"model.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.decoder_dim < 16 or self.decoder_dim % 8:
            raise PipelineError(f"model.decoder_dim must be a multiple of 8 and at least 16, got {self.decoder_dim}")
        if len(self.skip_blocks) != 2 or self.skip_blocks[0] >= self.skip_blocks[1] or self.skip_blocks[0] < 0:
            raise PipelineError(f"model.skip_blocks must be two increasing block indices, got {list(self.skip_blocks)}")
        if self.image_size < 1:
            raise PipelineError(f"image_size must be positive, got {self.image_size}")
        if self.num_classes < 1:
            raise PipelineError(f"num_classes must be positive, got {self.num_classes}")
        from .clip import clip_model_config

        clip_cfg = clip_model_config(self.clip_model)
        patch = int(clip_cfg["vision_cfg"]["patch_size"])
        if self.image_size % patch:
            raise PipelineError(f"train.crop_size ({self.image_size}) must be a multiple of the patch size {patch} "
                                f"of clip.model {self.clip_model}")
        if self.embed_dim is None:  # channels of the dense map: CLIP's joint space, or the ImageNet ViT's width
            self.embed_dim = int(clip_cfg["embed_dim"] if self.encoder == "clip" else clip_cfg["vision_cfg"]["width"])

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("skip_blocks", "pixel_mean", "pixel_std"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineError(f"model config: unknown key(s) {', '.join(unknown)}")
        return cls(**{"encoder": "clip", "imagenet_weights": "none", **data})  # models saved before the baseline


def paper_model_config(num_classes: int = 21) -> ModelConfig:
    """The paper's network shape (SemiVL on VOC: ViT-B/16 CLIP at 512 px, d = 128, skips from blocks 0 and 4),
    random weights: what the benchmarks and the parity checks against the official parameter counts build."""
    return ModelConfig(clip_model="ViT-B-16", clip_pretrained="none", encoder="clip", imagenet_weights="none",
                       image_size=512, clip_init=True,
                       spatial_finetune=True, decoder="vlg", decoder_dim=128, skip_blocks=(0, 4),
                       align_corners=True, num_classes=num_classes)


def model_config_from_params(params, class_names: list[str] | None = None) -> ModelConfig:
    """The ModelConfig of params.yaml (sections clip, model, classes and train.crop_size)."""
    if class_names is None:
        from ..data.classes import load_classes

        class_names = load_classes(params.get_str("classes.file")).names
    from .clip import uses_quick_gelu

    clip_model, clip_pretrained = params.get_str("clip.model"), params.get_str("clip.pretrained")
    return ModelConfig(
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        clip_quick_gelu=uses_quick_gelu(clip_model, clip_pretrained, params.raw("clip.quick_gelu")),
        encoder=params.get_str("model.encoder", choices=ENCODERS),
        imagenet_weights=params.get_str("model.imagenet_weights"),
        image_size=params.get_int("train.crop_size", min=1),
        clip_init=params.get_bool("model.clip_init"),
        spatial_finetune=params.get_bool("model.spatial_finetune"),
        decoder=params.get_str("model.decoder", choices=DECODERS),
        decoder_dim=params.get_int("model.decoder_dim", min=16),
        skip_blocks=tuple(params.get_list("model.skip_blocks", int, min_len=2)),
        align_corners=params.get_bool("model.align_corners"),
        num_classes=len(class_names),
        class_names=list(class_names),
    )
