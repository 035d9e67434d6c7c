#!/usr/bin/env bash
# What the GPU machine runs (see docs/PERF.md, "GPU"): from the repository
# root of a copy of the working tree, with the wheels of .whl/ carried along
# (../shared/gpu/fetch-wheels.sh keras==3.15.1 namex optree).
#   docs/gpu/run.sh check      environment, then the fused kernels' tests on the GPU
#   docs/gpu/run.sh targets    python -m bench.targets on JAX and PyTorch
#   docs/gpu/run.sh sweep NAME pytest bench --benchmark-only --sweep NAME on JAX and PyTorch
# Everything it writes goes under $OUT (default: ./gpu-out).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
log() { echo "== $(date -u +%H:%M:%S) $*"; }

case "${1:-check}" in
  check)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
      --format=csv | tee "$OUT/nvidia-smi.csv"
    KERAS_BACKEND=jax python3 -c "import jax, torch, triton, keras; print('jax', jax.__version__, jax.devices(), \
'torch', torch.__version__, 'triton', triton.__version__, 'keras', keras.__version__)"
    log "pallas tests (JAX, compiled for the GPU)"
    KERAS_BACKEND=jax timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_aggregation.py -k pallas 2>&1 | tail -25
    [ -n "${SKIP_TRITON_TESTS:-}" ] && exit 0
    log "triton tests (PyTorch, compiled for the GPU)"
    KERAS_BACKEND=torch timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_aggregation.py -k triton 2>&1 | tail -25
    ;;
  targets)
    shift
    for backend in ${BACKENDS:-torch jax}; do
      log "targets on $backend"
      KERAS_BACKEND=$backend timeout "${TARGET_LIMIT:-240}" python3 -m bench.targets --out "$OUT" "$@" \
        2>&1 | grep -v "^WARNING\|oneDNN\|cuda_" | tee "$OUT/targets-$backend.log" | tail -45
    done
    ;;
  sweep)
    for backend in ${BACKENDS:-torch jax}; do
      log "sweep ${2:-paper} on $backend"
      KERAS_BACKEND=$backend timeout "${SWEEP_LIMIT:-280}" python3 -m pytest bench --benchmark-only -q \
        -p no:cacheprovider --sweep "${2:-paper}" --run-dir "/tmp/run-$backend" --no-report 2>&1 | tail -12
      # one file per run: what comes back from the machine is limited in count
      tar czf "$OUT/sweep-$backend.tgz" -C /tmp "run-$backend"
    done
    ;;
esac
