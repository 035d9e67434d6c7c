#!/usr/bin/env bash
# What the GPU machine runs (docs/PERF.md, the GPU sections): from the
# repository root of a copy of the working tree, with the wheels of .whl/
# carried along (docs/gpu/wheels.sh fetches them).
#   docs/gpu/run.sh check            environment, then the fused kernels' tests on the GPU (Pallas and
#                                    Triton on JAX, Triton on PyTorch)
#   docs/gpu/run.sh targets          python -m bench.targets on JAX and PyTorch
#     OUT=$OUT/window INVOLUTION_UNROLL_WINDOW=1 docs/gpu/run.sh targets: the same with every tap
#     unrolled (the loops of kernel versions up to v4), to time against the default row loop
#     OUT=$OUT/tiles INVOLUTION_TILE_WIDTH=8 docs/gpu/run.sh targets: the same with the Triton
#     kernels' 2-D pixel tiles, 8 pixels wide, to time against the default flat tiles
#   docs/gpu/run.sh sweeps [NAME...] the timer's calibration, then each sweep (default: gpu, then
#                                    paper with --tf32) on each of $BACKENDS, run directories under $OUT
# A 30-minute lease holds about three 10-minute calls once the machine has started; one plan
# (each call's rows come back even when it is cut off; a call runs 600 s at most):
#   call 1: TARGET_LIMIT=270 docs/gpu/run.sh targets   (issue 12's targets, PyTorch then JAX; each
#           checks its aggregation against shiftsum's on the GPU)
#   call 2: BACKENDS=torch LIMIT_GPU=450 docs/gpu/run.sh sweeps gpu   (issue 11: 8 minutes a sweep;
#           the calibration before it takes up to 120 s)
#   call 3: BACKENDS=jax LIMIT_GPU=450 docs/gpu/run.sh sweeps gpu
# In a later lease: `check` (the kernels' tests compiled for the GPU: five pytest runs of up to
# TEST_LIMIT s each), the `paper` sweeps, and the window and tile variants of `targets`. The window
# variant compiles ten times longer (with Triton 3.6, the GPU machine's, its 126 binaries at the
# RedNet stages took 1,133 s on the 2-core CPU machine against 115 s for the default: PERF.md
# section 18), so it takes a call of its own per backend:
#   OUT=$OUT/window INVOLUTION_UNROLL_WINDOW=1 BACKENDS=torch TARGET_LIMIT=560 docs/gpu/run.sh targets
# docs/gpu/rehearse.sh runs these calls on a CPU machine with the GPU machine's versions first.
# Everything it writes goes under $OUT (default: ./gpu-out). A sweep appends its rows to its run
# directory's results.jsonl as each case finishes, and the directory is copied to
# $OUT/<sweep>-<backend> every 20 s and at the end, so a command cut off at its time limit keeps
# them (resume with --resume DIR).
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
    # The whole-window variant (INVOLUTION_UNROLL_WINDOW=1) is left to `targets`: its kernels take
    # seconds each to compile, and `targets` checks its aggregation against the portable one.
    log "pallas tests (JAX, compiled for the GPU)"
    KERAS_BACKEND=jax timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_aggregation.py -k "pallas and not window" 2>&1 | tail -25
    KERAS_BACKEND=jax timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_involution.py -k "generation and pallas" 2>&1 | tail -25
    log "triton tests (JAX: the Triton kernels through jax-triton, compiled for the GPU)"
    KERAS_BACKEND=jax timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_aggregation.py tests/layers/test_involution.py -k "triton and not window" 2>&1 | tail -25
    [ -n "${SKIP_TRITON_TESTS:-}" ] && exit 0
    log "triton tests (PyTorch, compiled for the GPU)"
    KERAS_BACKEND=torch timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_aggregation.py -k "triton and not window" 2>&1 | tail -25
    log "triton_fused tests (the generation on chip, PyTorch, compiled for the GPU)"
    KERAS_BACKEND=torch timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
      tests/layers/test_involution.py -k generation 2>&1 | tail -25
    ;;
  targets)
    shift
    for backend in ${BACKENDS:-torch jax}; do
      log "targets on $backend"
      KERAS_BACKEND=$backend timeout "${TARGET_LIMIT:-240}" python3 -m bench.targets --out "$OUT" "$@" \
        2>&1 | grep -v "^WARNING\|oneDNN\|cuda_" | tee "$OUT/targets-$backend.log" | tail -45
    done
    ;;
  sweeps)
    # Run directories live in $RUNS (kept while the machine stays warm; a cold
    # machine gets them from .gpu-runs/, carried along) and are copied to $OUT
    # after each sweep, so a sweep cut off by its limit is resumed by the next call.
    shift
    sweeps=("${@:-gpu paper}")
    RUNS=${RUNS:-/tmp/runs}
    mkdir -p "$RUNS"
    [ -d .gpu-runs ] && cp -rn .gpu-runs/. "$RUNS"/
    for backend in ${BACKENDS:-torch jax}; do
      logfile="$OUT/log-$backend.txt"
      { log "machine"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,\
temperature.gpu,power.draw,power.limit --format=csv; } >> "$logfile" 2>&1
      if [ -z "${SKIP_CALIBRATION:-}" ]; then
        log "calibration on $backend" | tee -a "$logfile"
        KERAS_BACKEND=$backend timeout 120 python3 -m bench.calibrate 2>&1 | grep calibrate | tee -a "$logfile"
      fi
      for sweep in ${sweeps[@]}; do
        extra=()
        [ "$sweep" = paper ] && extra=(--tf32)
        limit_var="LIMIT_${sweep^^}"
        # Compile the cases in parallel on the host's cores before timing them (bench.compile_cache),
        # for half the sweep's limit at most, so that a slow compilation cannot leave a call without rows
        [ "${PRECOMPILE:-12}" != 0 ] && extra+=(--precompile "${PRECOMPILE:-12}" \
          --precompile-time "${PRECOMPILE_TIME:-$(( ${!limit_var:-480} / 2 ))}")
        dir="$RUNS/$sweep-$backend"
        start=(--run-dir "$dir")
        [ -f "$dir/run.json" ] && start=(--resume "$dir")
        log "sweep $sweep ${extra[*]} ${start[*]} on $backend (limit ${!limit_var:-480} s)" | tee -a "$logfile"
        # A copy every 20 s as well, so that a call the GPU tool cuts off at its own limit (which
        # leaves no time for the copy after the sweep) still brings back the rows finished so far.
        ( while sleep 20; do [ -d "$dir" ] && mkdir -p "$OUT/$sweep-$backend" && cp -r "$dir/." "$OUT/$sweep-$backend/"; done ) &
        copier=$!
        KERAS_BACKEND=$backend timeout "${!limit_var:-480}" python3 -m pytest bench --benchmark-only -q \
          -p no:cacheprovider --sweep "$sweep" "${extra[@]}" "${start[@]}" --no-report \
          --benchmark-columns=median,rounds 2>&1 | grep -v "^test_case\[" | tail -40 | tee -a "$logfile"
        kill "$copier" 2>/dev/null; wait "$copier" 2>/dev/null
        log "end of sweep $sweep on $backend: $(wc -l < "$dir/results.jsonl") rows" | tee -a "$logfile"
        rm -rf "${OUT:?}/$sweep-$backend" && cp -r "$dir" "$OUT/$sweep-$backend"
      done
    done
    ;;
esac
