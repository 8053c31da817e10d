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
# Two extra checks on GPUs: encoding 400 JPEGs at 256 px with vq_f16 (images/s with 0 and 8 DataLoader workers,
# benchmarks/encode_gpu.json), and, with at least 2 GPUs, a 2-step FSDP smoke run of the GPT-XXL shape through
# configs/accelerate/fsdp.yaml that writes sharded checkpoints and resumes from step 2 to 3 (docs/guides/datasets.md).
fsdp_smoke() {
  local tmp; tmp=$(mktemp -d)
  "$PY" -c "import torch, vtok; torch.manual_seed(0); vtok.build('configs/tokenizer/vq_f16.yaml').save_pretrained('$tmp/tok')"
  "$PY" -m vtok.cli encode --tokenizer "$tmp/tok" builtin --size 256 --shards 1000 --device cuda --out "$tmp/tokens"
  local train=(-m vtok.launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 -m vtok.cli train
    configs/ar/gpt_xxl.yaml "data.source=$tmp/tokens" train.batch_size=2 train.save_every=1 train.log_every=1)
  "$PY" "${train[@]}" train.steps=2 --out "$tmp/run"
  "$PY" "${train[@]}" train.steps=3 --out "$tmp/run"  # resumes from the step-2 checkpoint
  local ok=0  # each rank wrote its slices; the released model was gathered whole
  [ -f "$tmp/run/checkpoints/step_00000003/sharded/__1_0.distcp" ] && [ -f "$tmp/run/final/model.safetensors" ] || ok=1
  rm -rf "$tmp"
  return $ok
}
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" benchmarks/bench_encode.py --model vq_f16 --size 256 --count 400 --workers 0,8 --device cuda \
    --json benchmarks/encode_gpu.json || echo "encode benchmark: FAILED"
  if [ "$("$PY" -c "import torch; print(torch.cuda.device_count())")" -ge 2 ]; then
    if fsdp_smoke; then echo "FSDP smoke (GPT-XXL, 2 GPUs, 2 steps + resume): ok"; else echo "FSDP smoke: FAILED"; fi
  fi
  exec "$PY" benchmarks/bench_fast.py --device cuda --out benchmarks/fast_gpu.json "$@"
fi
echo "no CUDA device: the CPU sizes"
exec "$PY" benchmarks/bench_fast.py --device cpu --small --out benchmarks/fast_cpu.json "$@"
