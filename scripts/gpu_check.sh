#!/usr/bin/env bash
# The GPU readiness check of the paper preset (semivl_edge/tools/gpu_check.py): bf16 vs fp32 loss over the first
# steps, training iterations/s and peak memory at 512 px with ViT-B/16, torchrun DDP on every visible GPU, and
# distill and eval_gpu throughput; writes reports/benchmarks/gpu_check.json. `--dry` checks the same flow on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv run semivl-edge gpu-check "$@"
