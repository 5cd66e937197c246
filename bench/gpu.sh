#!/usr/bin/env bash
# One GPU benchmark for a lent device (H100/H200), self-contained, well within 8 minutes:
# DS2-size training throughput, toolkit loop (bf16 AMP, packed cuDNN, length buckets, the real data
# loader) vs a naive one (fp32, no packing, no bucketing), padding efficiency, peak memory, and the
# GPU/CPU ratio against the CPU figure measured on the development machine. See bench/bench_gpu.py.
#
#   bench/gpu.sh [OUT_FILE]        GPU mode: numbers to OUT_FILE (default $OUT/gpu.txt, else ./gpu.txt)
#   bench/gpu.sh --cpu [OUT_FILE]  the same model on this CPU, 1 thread, a few steps (the CPU figure)
#
# Fails with exit 3 and a message when GPU mode finds no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=cuda
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
out=${1:-${OUT:+$OUT/gpu.txt}}
out=${out:-gpu.txt}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if [ "$mode" = cuda ]; then
  "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' || {
    echo "bench/gpu.sh: no CUDA device visible to torch; this is the GPU benchmark (bench/gpu.sh --cpu runs the CPU mode)" >&2
    exit 3; }
  # 7.5 minutes at most: synthetic corpus ~1 min, 30 toolkit + 12 naive steps of 1600 s batches
  timeout 450 "$python" bench/bench_gpu.py --device cuda --out "$out" --steps 30 --naive-steps 12
else
  OMP_NUM_THREADS=1 timeout 900 "$python" bench/bench_gpu.py --device cpu --threads 1 --out "$out" \
    --utts 12 --steps 2 --naive-steps 1 --warmup 1 --batch-seconds 16 --workers 1
fi
echo "bench/gpu.sh: wrote $out"
