"""Mobile artifacts: one fixed-size uint8 window in, logits for that window out, preprocessing inside.

Input uint8 RGB [1,3,S,S] (S = mobile.input_size) -> float logits [1,C,S,S]; /255 and the
mean/std normalisation happen inside, and so does the resize to the training crop when S differs
from it. An app (or `semivl_edge.evaluation.inference.predict_windows`) only resizes the image's
short side and cuts windows: no normalisation code outside the model that could drift.

- `.ptl`: TorchScript for the lite interpreter (what PyTorch Android loads). Deprecated upstream;
  `optimize_for_mobile` needs a torch build with XNNPACK, which the torch 2.13 wheels are not:
  `try_optimize_for_mobile` detects that and says so instead of crashing.
- `.pte`: ExecuTorch with the XNNPACK delegate (torch.export -> to_edge_transform_and_lower ->
  to_executorch), fp32 and int8 (XNNPACK quantizer: static, symmetric, per-channel weights,
  calibrated through torchao's pt2e prepare/convert). This is the path forward: ExecuTorch is
  maintained and its Python runtime runs the same XNNPACK kernels on the host as on a phone.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_path
from ..errors import PipelineError
from ..evaluation.inference import normalise
from .torchscript import quiet_torchscript, trace_network
from .xnnpack_ops import XnnpackGroupNorm, XnnpackLayerNorm, xnnpack_friendly

log = logging.getLogger(__name__)


class WindowModel(nn.Module):
    """uint8 [1,3,S,S] -> logits [1,C,S,S] for one window; scriptable and torch.export-able."""

    def __init__(
        self,
        network: nn.Module,
        text_embeddings: Tensor,
        pixel_mean: Sequence[float] | Tensor,
        pixel_std: Sequence[float] | Tensor,
        input_size: int,
        crop_size: int,
    ):
        super().__init__()
        self.network = network
        self.register_buffer("text_embeddings", text_embeddings.detach().to(torch.float32).clone())
        self.register_buffer("pixel_mean", torch.as_tensor(pixel_mean, dtype=torch.float32).reshape(1, 3, 1, 1).clone())
        self.register_buffer("pixel_std", torch.as_tensor(pixel_std, dtype=torch.float32).reshape(1, 3, 1, 1).clone())
        self.size: int = input_size
        self.crop_size: int = crop_size

    def forward(self, window: Tensor) -> Tensor:
        return self.window_logits(window, self.text_embeddings)

    def window_logits(self, window: Tensor, text_embeddings: Tensor) -> Tensor:
        x = normalise(window, self.pixel_mean, self.pixel_std)
        if self.size != self.crop_size:
            x = F.interpolate(x, size=[self.crop_size, self.crop_size], mode="bilinear", align_corners=False)
        logits = self.network(x, text_embeddings)
        if self.size != self.crop_size:
            logits = F.interpolate(logits, size=[self.size, self.size], mode="bilinear", align_corners=False)
        return logits

    @torch.jit.export
    def input_size(self) -> int:
        """S: the side of the square uint8 window the artifact takes (read by `runtimes`)."""
        return self.size


def example_window(input_size: int) -> Tensor:
    return torch.full((1, 3, input_size, input_size), 128, dtype=torch.uint8)


# --- lite interpreter ----------------------------------------------------------------------------


def xnnpack_in_torch() -> bool:
    """Whether this torch build has XNNPACK (what optimize_for_mobile needs); the 2.13 wheels do not."""
    probe = getattr(torch._C, "_is_xnnpack_enabled", None)
    return bool(probe()) if probe is not None else False


def try_optimize_for_mobile(module: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, bool]:
    """optimize_for_mobile where the build supports it; otherwise the module unchanged and a log note."""
    if not xnnpack_in_torch():
        log.info(
            "optimize_for_mobile skipped: this torch build (%s) has no XNNPACK, which it requires; "
            "the .ptl is saved unoptimised (the ExecuTorch .pte files use XNNPACK instead)",
            torch.__version__,
        )
        return module, False
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        with quiet_torchscript():
            return optimize_for_mobile(module, preserved_methods=["input_size"]), True
    except RuntimeError as exc:  # e.g. an op pattern its passes cannot rewrite
        log.info("optimize_for_mobile failed (%s); the .ptl is saved unoptimised", str(exc).splitlines()[0])
        return module, False


def export_lite(window_model: WindowModel, path: str | Path) -> bool:
    """Write the lite-interpreter `.ptl`; returns whether optimize_for_mobile was applied."""
    network = trace_network(window_model.network, window_model.text_embeddings, window_model.crop_size)
    scripted_source = WindowModel(
        network, window_model.text_embeddings, window_model.pixel_mean, window_model.pixel_std,
        window_model.size, window_model.crop_size,
    )
    with quiet_torchscript():
        scripted = torch.jit.freeze(torch.jit.script(scripted_source.eval()), preserved_attrs=["input_size"])
    module, optimised = try_optimize_for_mobile(scripted)
    with quiet_torchscript():
        data = module._save_to_buffer_for_lite_interpreter()  # the archive's folder is then fixed: same model, same bytes
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return optimised


# --- ExecuTorch ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_constant_copies() -> Iterator[None]:
    """ExecuTorch logs one INFO line per copied weight on the root logger; keep those out of the stage log."""
    root = logging.getLogger()
    noise = lambda record: not record.getMessage().startswith("Copying constant nodes")  # noqa: E731
    root.addFilter(noise)
    for handler in root.handlers:
        handler.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)
        for handler in root.handlers:
            handler.removeFilter(noise)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Hide a FutureWarning that torch.export / torchao emit from their own internals (pytree LeafSpec)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
        yield


def _executorch():
    try:
        with quiet_torchscript():  # executorch/torchao modules use jit decorators at import time
            # out variants of quantized_decomposed ops, for an int8 graph that leaves a weight dequantization outside
            # the delegate (a weight computed at run time, e.g. sliced: xnnpack_ops rewrites SemiVL's one such case)
            import executorch.kernels.quantized  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            from executorch.exir.backend.canonical_partitioners.duplicate_constant_node_pass import (
                duplicate_constant_node,
            )
            from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
    except ImportError as exc:
        raise PipelineError(f"executorch is not importable ({exc}); install the locked environment (uv sync)") from None

    class UnshareConstants(ExportedProgramPassBase):
        """Give every user of a shared weight its own copy before partitioning.

        The dense encoder reads the skip blocks' weights twice (the normal block and the MaskCLIP
        value path). The XNNPACK partitioner then joins both users into one partition through
        the shared weight, which creates a dependency cycle ("Invalid partition, found
        dependency cycles"). Separate copies cost the size of those weights once more in the file.
        """

        def call(self, program):
            signature = program.graph_signature
            lifted = (set(signature.inputs_to_parameters) | set(signature.inputs_to_buffers)
                      | set(signature.inputs_to_lifted_tensor_constants))
            shared = [node.name for node in program.graph.nodes
                      if node.op == "placeholder" and node.name in lifted and len(node.users) > 1]
            # Each duplication re-validates the whole program (0.3-0.6 s with the encoder's ~50 shared weights):
            # validate once, after all of them.
            program._validate = lambda: None
            try:
                for name in shared:
                    duplicate_constant_node(program, name)
            finally:
                del program._validate
            program._validate()
            return ExportedProgramPassResult(program, bool(shared))

    return XnnpackPartitioner, to_edge_transform_and_lower, UnshareConstants


def quantize_int8(module: nn.Module, calibration: Iterable[Tensor | tuple[Tensor, ...]]) -> nn.Module:
    """Static int8 (symmetric, per-channel weights) with the XNNPACK quantizer, calibrated on `calibration`: inputs of
    `module` (a window model's: uint8 windows), each a tensor or a tuple of tensors; the first also traces it."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batches = [item if isinstance(item, tuple) else (item,) for item in calibration]
    if not batches:
        raise PipelineError("mobile.calibration_images: int8 calibration needs at least one image")
    with quiet_export():
        captured = torch.export.export(xnnpack_friendly(module.eval()), batches[0], strict=False).module()
        # These stay float, inside the delegate all the same: the norms (their statistics would lose too much in int8), and
        # what ExecuTorch's XNNPACK delegate runs in fp32 only: the attention's two batched matmuls, softmax, GELU.
        quantizer = (XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                     .set_module_type(XnnpackLayerNorm, None).set_module_type(XnnpackGroupNorm, None))
        prepared = prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        return convert_pt2e(prepared)


def delegation_summary(graph_module) -> dict:
    """What the XNNPACK partitioner took: delegated pieces and nodes, and the operators left to ExecuTorch's portable
    (reference, single-threaded) kernels, most frequent first (ExecuTorch devtools' get_delegation_info)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    left = {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated}
    return {"delegated_pieces": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
            "non_delegated_nodes": info.num_non_delegated_nodes,
            "non_delegated_by_operator": dict(sorted(left.items(), key=lambda item: (-item[1], item[0])))}


def export_executorch(window_model: nn.Module, input_size: int, path: str | Path) -> dict:
    """Lower `window_model` (eager or pt2e-quantized) to a `.pte` with the XNNPACK delegate; returns its
    delegation summary."""
    return lower_to_executorch(window_model, (example_window(input_size),), path)


def export_int8(window_model: nn.Module, calibration: list[Tensor], input_size: int, path: str | Path) -> dict:
    """quantize_int8 on `calibration`, then export_executorch."""
    return export_executorch(quantize_int8(window_model, calibration), input_size, path)


# A lowering job: (function, its arguments before the output path). The function writes the path and returns the
# file's delegation summary; function and arguments are pickled to a worker process.
LoweringJob = tuple[Callable[..., dict], tuple]


def _lowering_worker() -> None:
    # torch keeps its default thread count: int8 calibration then computes what it computes in the stage's process
    if sys.platform.startswith("linux"):  # die with the stage instead of finishing a file nobody will read
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def lower_all(jobs: dict[Path, LoweringJob], workers: int) -> dict[str, dict]:
    """Write every job's `.pte`, `workers` processes at a time; {file name: delegation summary}.

    Lowering a `.pte` is mostly ExecuTorch's graph passes, single-threaded Python, so on two cores two files lower in
    the time of one. Jobs start in the given order (longest first balances the workers best)."""
    if workers <= 1 or len(jobs) <= 1:
        return {path.name: function(*args, path) for path, (function, args) in jobs.items()}
    log.info("lowering %d .pte files, %d processes at a time", len(jobs), workers)
    # spawn, not fork: OpenMP's threads in this process do not survive a fork
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_lowering_worker) as pool:
        futures = {pool.submit(function, *args, path): path for path, (function, args) in jobs.items()}
        done: dict[str, dict] = {}
        try:
            for future in as_completed(futures):
                done[futures[future].name] = future.result()
                log.info("lowered %s (%d of %d)", futures[future].name, len(done), len(jobs))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {path.name: done[path.name] for path in jobs}


def lower_to_executorch(module: nn.Module, example: tuple, path: str | Path, dynamic_shapes=None) -> dict:
    """torch.export `module` on `example` (dynamic_shapes as torch.export takes them), lower it with the XNNPACK
    delegate and write the `.pte` atomically; returns its delegation summary. An eager module is first rewritten
    into operators XNNPACK takes (export.xnnpack_ops); a pt2e-quantized one already was, by quantize_int8."""
    XnnpackPartitioner, to_edge_transform_and_lower, UnshareConstants = _executorch()
    if not isinstance(module, torch.fx.GraphModule):
        module = xnnpack_friendly(module)
    with quiet_export(), _quiet_constant_copies(), torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False)
        edge = to_edge_transform_and_lower(program, transform_passes=[UnshareConstants()],
                                           partitioner=[XnnpackPartitioner()])
        delegation = delegation_summary(edge.exported_program().graph_module)
        executorch_program = edge.to_executorch()
    with atomic_path(path) as tmp:
        tmp.write_bytes(executorch_program.buffer)
    return delegation
