#!/usr/bin/env bash
# The GPU checks of docs/runtime.md in one script, sized for about 8 minutes on one GPU: the
# CUDA-marked tests, seconds per epoch and peak memory of each backbone plain and with BALM on
# CUDA, and sweep throughput with 1, 4 and 8 workers sharing the GPU. Everything goes to $OUT
# (default gpu_out/). It uses the machine's own python3 and torch (no venv), with src/ on the path:
#   OUT=gpu_out bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PY:-python3}
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1
# 1. the CUDA cases (tests/experiments/test_cuda.py), about 1 minute
timeout 180 $PY -m pytest tests/experiments/test_cuda.py -m cuda -q -p no:cacheprovider > "$OUT/cuda_tests.txt" 2>&1
echo "cuda tests: exit $?" >> "$OUT/machine.txt"
# 2. seconds per epoch and peak memory (CUDA max allocated) per backbone, plain and BALM, about 4 minutes
timeout 300 $PY benchmarks/bench_runtime.py --device cuda --sets iemocap \
  --backbones late_fusion mmgcn mmdfn gcnet micga redcore --epochs 3 --out "$OUT/runtime_cuda.json" \
  > "$OUT/runtime_cuda.txt" 2>&1
echo "bench_runtime: exit $?" >> "$OUT/machine.txt"
# 3. runs per hour of MMGCN+BALM sweeps with 1, 4 and 8 workers on the one GPU, about 3 minutes
timeout 240 $PY benchmarks/bench_sweep_throughput.py --device cuda --workers 1 4 8 --runs 8 --epochs 10 \
  > "$OUT/throughput_cuda.txt" 2>&1
echo "throughput: exit $?" >> "$OUT/machine.txt"
cat "$OUT/machine.txt"; tail -3 "$OUT/cuda_tests.txt"; cat "$OUT/runtime_cuda.txt" "$OUT/throughput_cuda.txt"
