#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU: the gpu-marked tests (the compute engine on CUDA against
# the CPU and the brute-force reference, float32 and bf16), then bench.gpu_scaling in bf16 (the workers' default)
# at 1M and 4M tokens, the 10M-token case, d_sae 1,048,576 at 1M tokens, and float32 at 1M.
# Each step has its own time limit and the run goes on past a failed one. Logs go to $OUT (default ./var/gpu-check).
# Usage: scripts/gpu_check.sh [STEP ...]  (the steps named, default all: tests bench_bf16 bench_10m bench_wide bench_fp32;
#        PYTHON=.venv/bin/python to use the project's environment)
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-var/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}platform:.

STEPS=${*:-tests bench_bf16 bench_10m bench_wide bench_fp32}

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, its output to the terminal and $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s) ==="
  local start=$SECONDS
  timeout "$limit" "$@" > >(tee "$OUT/$name.txt") 2>&1
  echo "=== $name: exit $? after $((SECONDS - start))s ==="
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
$PY -c "import torch; from importlib.metadata import version as v; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformer-lens', v('transformer-lens'), 'transformers', v('transformers'))" 2>&1 | tee -a "$OUT/device.txt"
step tests 90 $PY -m pytest -c /dev/null --rootdir . --noconftest -p no:cacheprovider -q -m gpu -W ignore::pytest.PytestUnknownMarkWarning \
  tests/compute/test_gpu.py tests/compute/test_dashboard_reference.py tests/compute/test_dashboard_precision.py \
  tests/compute/test_neighbours.py tests/compute/test_sample_keys.py
step bench_bf16 100 $PY -m bench.gpu_scaling --dtype bfloat16 --tokens 1000000 4000000
step bench_10m 130 $PY -m bench.gpu_scaling --dtype bfloat16 --tokens 10000000
step bench_wide 150 $PY -m bench.gpu_scaling --dtype bfloat16 --tokens 1000000 --d-sae 1048576 --batch-size 8
step bench_fp32 60 $PY -m bench.gpu_scaling --dtype float32 --tokens 1000000
