"""Load any exported artifact behind one interface: uint8 image tensor in, float logits out.

`load_runtime(path)` picks the runtime by suffix:
- `.ts`  TorchScript (torch.jit.load): the whole pipeline, any image size, `input_size` None;
- `.ptl` lite interpreter (what PyTorch Android runs): one uint8 window [1,3,S,S];
- `.pte` ExecuTorch (its Python runtime, XNNPACK kernels as on a phone): one uint8 window [1,3,S,S].
Fixed-size runtimes are driven over whole images by `evaluation.inference.predict_windows`.
A missing, corrupt or mismatched file, and an input of the wrong shape, raise a one-line
`PipelineError` naming the file.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from ..errors import PipelineError, first_line
from .torchscript import METADATA_FILE, quiet_torchscript

SUFFIXES = {".ts": "torchscript", ".ptl": "lite_interpreter", ".pte": "executorch"}


@contextlib.contextmanager
def quiet_executorch_import() -> Iterator[None]:
    """Import-time noise of the ExecuTorch runtime: jit decorators, an "experimental API" notice."""
    with quiet_torchscript(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This API is experimental")
        yield


class Runtime:
    """An artifact ready to run on the CPU. `input_size` None: any image size; S: uint8 [1,3,S,S] only."""

    kind: str = ""

    def __init__(self, path: Path, input_size: int | None):
        self.path = path
        self.input_size = input_size

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6

    def check_input(self, image: Tensor) -> None:
        if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.dim() != 4 or image.shape[1] != 3:
            got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
            raise PipelineError(f"{self.path}: expects a uint8 RGB tensor [B, 3, H, W], got {got}")
        if self.input_size is not None:
            expected = (1, 3, self.input_size, self.input_size)
            if tuple(image.shape) != expected:
                raise PipelineError(
                    f"{self.path}: fixed-size artifact takes uint8 [1, 3, {self.input_size}, {self.input_size}], "
                    f"got {list(image.shape)}; cut windows with predict_windows"
                )

    # What the runtime raises when an input does not run (reported as one line naming the file).
    inference_errors: tuple[type[BaseException], ...] = (RuntimeError,)

    def __call__(self, image: Tensor) -> Tensor:
        self.check_input(image)
        try:
            with torch.inference_mode():
                return self._run(image.contiguous())
        except self.inference_errors as exc:
            raise PipelineError(f"{self.path}: inference failed ({first_line(exc)})") from None

    def _run(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, input_size={self.input_size})"


class TorchScriptRuntime(Runtime):
    kind = "torchscript"

    def __init__(self, path: Path):
        extra = {METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors on a bad archive
            raise PipelineError(f"{path}: not a loadable TorchScript file ({first_line(exc)})") from None
        try:
            self.metadata = json.loads(extra[METADATA_FILE] or "{}")
        except ValueError:
            raise PipelineError(f"{path}: its {METADATA_FILE} entry is not valid JSON") from None
        super().__init__(path, self.metadata.get("input_size"))

    def _run(self, image: Tensor) -> Tensor:
        with quiet_torchscript():
            return self.module(image)


class LiteInterpreterRuntime(Runtime):
    kind = "lite_interpreter"

    def __init__(self, path: Path):
        from torch.jit.mobile import _load_for_lite_interpreter

        try:
            with quiet_torchscript():
                self.module = _load_for_lite_interpreter(str(path), map_location="cpu")
        except Exception as exc:
            raise PipelineError(f"{path}: not a loadable lite-interpreter (.ptl) file ({first_line(exc)})") from None
        try:
            size = int(self.module.run_method("input_size"))
        except Exception:
            raise PipelineError(f"{path}: has no input_size() method; export it with semivl_edge.export.mobile") from None
        self.metadata = {"input_size": size}
        super().__init__(path, size)

    def _run(self, image: Tensor) -> Tensor:
        return self.module(image)


class ExecuTorchRuntime(Runtime):
    kind = "executorch"
    inference_errors = (Exception,)  # its pybindings raise plain exceptions

    def __init__(self, path: Path):
        try:
            with quiet_executorch_import():
                import executorch.kernels.quantized  # noqa: F401  (registers the quantized kernels int8 files use)
                from executorch.runtime import Runtime as ETRuntime
        except ImportError as exc:
            raise PipelineError(f"{path}: the ExecuTorch runtime is not importable ({exc})") from None
        try:
            self.program = ETRuntime.get().load_program(path)
            self.method = self.program.load_method("forward")
            meta = self.method.metadata
            sizes = tuple(meta.input_tensor_meta(0).sizes())
        except Exception as exc:
            raise PipelineError(f"{path}: not a loadable ExecuTorch (.pte) program ({first_line(exc)})") from None
        if len(sizes) != 4 or sizes[0] != 1 or sizes[1] != 3 or sizes[2] != sizes[3]:
            raise PipelineError(f"{path}: expected one input [1, 3, S, S], the program declares {list(sizes)}")
        self.metadata = {"input_size": int(sizes[2])}
        super().__init__(path, int(sizes[2]))

    def _run(self, image: Tensor) -> Tensor:
        return self.method.execute([image])[0]


def load_runtime(path: str | Path, *, suffix: str | None = None) -> Runtime:
    """The runtime for an exported file, chosen by its suffix (.ts, .ptl, .pte) or by `suffix` if given."""
    path = Path(path)
    kind = SUFFIXES.get(suffix or path.suffix)
    if kind is None:
        raise PipelineError(f"{path}: unknown model format (expected one of {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found (run `dvc repro export_torchscript`)")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: model file is empty")
    cls = {"torchscript": TorchScriptRuntime, "lite_interpreter": LiteInterpreterRuntime, "executorch": ExecuTorchRuntime}[kind]
    return cls(path)


def set_cpu_threads(threads: int) -> int:
    """Use `threads` CPU threads in torch (eager, TorchScript, lite) and in ExecuTorch's XNNPACK threadpool.

    Call it before loading any .pte: resetting ExecuTorch's threadpool under a loaded program can crash.
    Returns the thread count torch reports back."""
    if threads < 1:
        raise PipelineError(f"thread count must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        with quiet_executorch_import():
            import executorch.extension.pybindings.portable_lib as portable
    except ImportError:
        return torch.get_num_threads()
    reset = getattr(portable, "_unsafe_reset_threadpool", None)
    if reset is not None:
        reset(threads)
    return torch.get_num_threads()
