#!/usr/bin/env bash
# The prepared accelerator benchmark: vtok's VQ-16 against diffusers' VQModel (encode/decode, batch 1/16/64,
# fp32 and bf16, eager and compiled), GPT-B sampling (batch 1/8/32, CFG 2, KV cache, compiled with CUDA graphs),
# the demo tokenizer's bf16 training throughput and FID feature extraction. At most 8 minutes on one H100/H200;
# writes benchmarks/fast_gpu.json and prints the table for RESULTS.md with the device named.
# Without a CUDA device it runs the same rows at CPU sizes (benchmarks/fast_cpu.json), so anyone can check it.
#   bash benchmarks/gpu.sh [--trained vtok-demo/run/final]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  exec "$PY" benchmarks/bench_fast.py --device cuda --out benchmarks/fast_gpu.json "$@"
fi
echo "no CUDA device: the CPU sizes"
exec "$PY" benchmarks/bench_fast.py --device cpu --small --out benchmarks/fast_cpu.json "$@"
