"""Open vocabulary on the device: CLIP's text tower as a `.pte`, and the window model that takes text embeddings.

An app embeds class names it was never trained on, on the phone: it tokenises each prompt with CLIP's BPE
tokenizer (open_clip's, int64 [N, L], L the model's context length), runs `text_encoder.pte` -> L2-normalised
embeddings [N, E], averages each class's prompts and normalises again (as `model.text.mean_embeddings` does), and
feeds those [C, E] rows with every uint8 window to `model_segment_fp32.pte` -> logits [1, C, S, S]. N and C are
free (1..MAX_ROWS): one file serves any class set.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import PipelineError, first_line
from .mobile import WindowModel, example_window

MAX_ROWS = 256  # upper bound of the dynamic prompt / class count the files accept


class TextEncoder(nn.Module):
    """tokens int64 [N, L] -> L2-normalised CLIP text embeddings [N, E] (open_clip's encode_text)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        clip = copy.deepcopy(clip).eval()
        del clip.visual  # only the text tower goes into the file
        self.clip = clip
        self.context_length = int(clip.context_length)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.clip.encode_text(tokens, normalize=True)


class SegmentWindowModel(WindowModel):
    """(uint8 window [1,3,S,S], text embeddings [C,E]) -> logits [1,C,S,S]: WindowModel with the class set an input."""

    def forward(self, window: Tensor, text_embeddings: Tensor) -> Tensor:  # type: ignore[override]
        return self.window_logits(window, text_embeddings)


def _rows() -> torch.export.Dim:
    return torch.export.Dim("rows", min=1, max=MAX_ROWS)


def export_text_encoder(encoder: TextEncoder, tokenizer, path: str | Path) -> dict:
    """`text_encoder.pte` (tokens [N, L], N dynamic); returns its delegation summary."""
    from .mobile import lower_to_executorch

    example = (tokenizer(["a photo of a cat.", "a photo of a dog."]).to(torch.int64),)
    return lower_to_executorch(encoder.eval(), example, path, dynamic_shapes=({0: _rows()},))


def export_segment_window(model: SegmentWindowModel, path: str | Path) -> dict:
    """`model_segment_fp32.pte` (window, text embeddings [C, E], C dynamic); returns its delegation summary."""
    from .mobile import lower_to_executorch

    example = (example_window(model.size), model.text_embeddings.clone())
    return lower_to_executorch(model.eval(), example, path, dynamic_shapes=(None, {0: _rows()}))


class ExecuTorchMethod:
    """A `.pte` program's forward with any inputs (the window runtimes of `runtimes` take one image only)."""

    def __init__(self, path: str | Path):
        from .runtimes import quiet_executorch_import

        self.path = Path(path)
        if not self.path.is_file():
            raise PipelineError(f"{self.path}: model file not found (run `dvc repro export_torchscript`)")
        try:
            with quiet_executorch_import():
                from executorch.runtime import Runtime as ETRuntime

            self.method = ETRuntime.get().load_program(self.path).load_method("forward")
        except Exception as exc:
            raise PipelineError(f"{self.path}: not a loadable ExecuTorch (.pte) program ({first_line(exc)})") from None

    def __call__(self, *inputs: Tensor) -> Tensor:
        try:
            with torch.inference_mode():
                return self.method.execute([t.contiguous() for t in inputs])[0]
        except Exception as exc:
            raise PipelineError(f"{self.path}: inference failed ({first_line(exc)})") from None
