#!/usr/bin/env bash
# Issue 14 on one lent GPU (H100 or A100), in one call of about 8 minutes:
#   1. benchmarks/gpu_check.py: the GPU paths still pass (precision, attention kernels, NCCL);
#   2. synthetic 320p shards written through PyAV (the GPU image has no ffmpeg program);
#   3. benchmarks/bench_pretrain_step.py: reference mode against ours for ViT-B, ViT-S, ViT-g (memory) and
#      ViT-L within a time budget, then the stream on the machine's cores feeding the fastest ViT-B setup.
# Everything lands in $OUT (./gpu-run-out without it): device.txt, gpu_check.log, shards.log, step.log,
# step.json (rewritten after each size, so a run cut short keeps what it measured).
#
# Once, on a machine with PyPI, in the checkout that the device tool sends (the GPU image lacks PyAV and
# webdataset):
#   bash benchmarks/gpu_run.sh prepare          # their wheels into .gpurun/wheels (git-ignored)
# Then, on the GPU, from the repository root (the device tool: carry [".gpurun"], timeout_s 560):
#   bash benchmarks/gpu_run.sh [BUDGET_S]       # BUDGET_S: seconds for the step candidates (default 180)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpurun/wheels

if [ "${1:-}" = prepare ]; then
  PY=${PYTHON:-.venv/bin/python}
  for pkg in av webdataset braceexpand; do
    version=$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))") || exit 1
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS" "$pkg==$version" || exit 1
  done
  ls -l "$WHEELS"
  exit 0
fi

OUT=${OUT:-gpu-run-out}
mkdir -p "$OUT"
BUDGET=${1:-180}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpurun-site \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/gpurun-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
start=$SECONDS
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch; print(torch.__version__)"; } \
  2>&1 | tee "$OUT/device.txt"
python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
echo "gpu_check: $((SECONDS - start)) s"
python3 benchmarks/bench_loader.py --write-shards /tmp/gpurun-shards --clips 128 2>&1 | tee "$OUT/shards.log"
python3 benchmarks/bench_pretrain_step.py --budget "$BUDGET" --shards /tmp/gpurun-shards --json "$OUT/step.json" \
  2>&1 | tee "$OUT/step.log"
echo "gpu_run: $((SECONDS - start)) s"
