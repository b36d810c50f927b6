"""Small torch helpers that several layers share: the pixel statistics and normalisation of the model's
inputs, and the choice of device. Kept here, low in the layers, so that a stage needing one of them does not
depend on (and rerun for edits of) the training or model code that also uses it."""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

from .errors import PipelineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # CLIP and the segmenter normalise inputs with these (0..1 scale)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 image(s) [..., 3, H, W] -> float32 normalised with mean / std given on the 0..1 scale.

    The training crops and the CLIP pretraining views; the exported models carry their own copy of this step
    (`evaluation.inference.normalise`, TorchScript-friendly, equal up to float rounding)."""
    image = TF.to_dtype(torch.as_tensor(image), torch.float32, scale=True)
    return TF.normalize(image, list(mean), list(std))


def resolve_device(preference: str, local_rank: int = 0, param: str = "train.device") -> torch.device:
    """auto | cpu | cuda -> the device this process uses; cuda without a GPU is an error naming `param`."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PipelineError(f"{param} is cuda but PyTorch sees no CUDA GPU (use auto or cpu)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
