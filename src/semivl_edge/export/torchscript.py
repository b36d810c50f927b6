"""TorchScript export of the whole inference pipeline (uint8 image of any size -> logits at that size).

The network is traced at the crop size (one window, batch 1) and the `SegmentationPipeline`
around it (normalisation, resizing, sliding windows, averaging) is scripted, so the file holds
every preprocessing step: an app feeds the decoded RGB image and nothing else. The module is
frozen, which turns the weights and the class text embeddings into constants.

TorchScript is deprecated upstream (torch 2.13 warns on every jit call; a hard error is proposed
for 2.14). It stays because PyTorch Android and the porting study use it; the way forward is the
ExecuTorch `.pte` export in `semivl_edge.export.mobile` (torch.export + XNNPACK delegate), which
runs the same kernels on the host and on phones. The deprecation warnings are silenced narrowly
(only those messages, only around our own jit calls) by `quiet_torchscript()`.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import PipelineError
from ..evaluation.inference import InferenceConfig, SegmentationPipeline, max_abs_diff, pixel_agreement

METADATA_FILE = "semivl_edge.json"  # extra file inside .ts archives: what the file expects and returns


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Hide the 'torch.jit ... is deprecated' / 'Lite Interpreter is deprecated' warnings, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Lite Interpreter is deprecated", category=DeprecationWarning)
        yield


def trace_network(network: nn.Module, text_embeddings: Tensor, size: int) -> torch.jit.ScriptModule:
    """Trace `network(images [1,3,size,size], text_embeddings [C,E])` (batch 1, one window size).

    The tracer warns about every shape-dependent branch (patch-size check, position-embedding
    resize); they are constants by design here, because the traced network only ever sees this
    one window size (the export checks parity on real images), so those warnings are hidden too.
    """
    example = (torch.zeros(1, 3, size, size), text_embeddings.detach().to(torch.float32))
    with quiet_torchscript(), warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(network.eval(), example, check_trace=False)


def script_pipeline(
    network: nn.Module,
    text_embeddings: Tensor,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    cfg: InferenceConfig,
) -> torch.jit.ScriptModule:
    """The frozen TorchScript pipeline: forward(image) with the class embeddings frozen in, and
    segment(image, text_embeddings [C,E]) for any other class set (VLG decoder; the plain decoder
    ignores the text).

    Only sliding mode exports: the network is traced at the crop size, the only size it then sees
    (in whole mode it would see every resized image size, which a trace cannot follow).
    """
    if cfg.mode != "sliding":
        raise PipelineError(
            f"eval.mode {cfg.mode!r} cannot be exported to TorchScript: the network is traced at one input size "
            "(eval.crop_size); use eval.mode sliding"
        )
    traced = trace_network(network, text_embeddings, cfg.crop_size)
    pipeline = SegmentationPipeline(traced, text_embeddings, pixel_mean, pixel_std, cfg).eval()
    with quiet_torchscript():
        scripted = torch.jit.script(pipeline)
        # `segment` stays callable: the same file serves any class set (open vocabulary)
        return torch.jit.freeze(scripted.eval(), preserved_attrs=["segment"])


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path, metadata: dict) -> None:
    """torch.jit.save with a JSON description of the interface as an extra file (read by `runtimes`).

    Saved through a buffer: a file's archive is named after the file (a temporary name when written atomically),
    a buffer's is always `archive`, so the same model gives the same bytes and DVC sees no change."""
    buffer = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(module, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    Path(path).write_bytes(buffer.getvalue())


@dataclass(frozen=True)
class Parity:
    """How far an exported artifact's logits are from the PyTorch reference on the same inputs."""

    max_abs_diff: float
    argmax_agreement_pct: float
    images: int

    def to_metrics(self) -> dict:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure_parity(
    reference: Callable[[Tensor], Tensor], candidate: Callable[[Tensor], Tensor], images: Iterable[Tensor]
) -> Parity:
    """Max abs logit difference and argmax agreement (pooled over all pixels) of two predictors."""
    worst, agree, pixels, count = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for image in images:
            expected, got = reference(image), candidate(image)
            if tuple(expected.shape) != tuple(got.shape):
                raise ValueError(f"exported model returned {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
            worst = max(worst, max_abs_diff(expected, got))
            n = expected.shape[0] * expected.shape[2] * expected.shape[3]
            agree += pixel_agreement(expected, got) * n
            pixels += n
            count += 1
    if count == 0:
        raise ValueError("parity needs at least one image")
    return Parity(max_abs_diff=worst, argmax_agreement_pct=agree / pixels, images=count)
