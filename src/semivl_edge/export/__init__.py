"""Deployment: exported files of the SemiVL pipeline and the runtimes that load them.

- `torchscript`: models/model.ts, the whole inference pipeline (uint8 image of any size -> logits);
- `mobile`: fixed-size uint8-window artifacts, lite interpreter `.ptl` and ExecuTorch XNNPACK `.pte`
  (fp32, int8) - ExecuTorch is the maintained path, TorchScript and the lite interpreter are deprecated;
- `runtimes`: `load_runtime(path)` for .ts / .ptl / .pte behind one call interface.

`semivl-edge bench deploy` (per-window CPU latency of every runtime) lives in `semivl_edge.tools.bench_deploy`.
"""
