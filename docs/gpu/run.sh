#!/usr/bin/env bash
# What the GPU machine runs (docs/PERF.md, the GPU sections): from the
# repository root of a copy of the working tree, with the wheels of .whl/
# carried along (docs/gpu/wheels.sh fetches them).
#   docs/gpu/run.sh check            environment, then the fused kernels' tests on the GPU (Pallas and
#                                    Triton on JAX, Triton on PyTorch)
#   docs/gpu/run.sh targets          python -m bench.targets on each of $BACKENDS (default: torch, then jax),
#                                    the layer cases compiled first by $PRECOMPILE (12) worker processes
#     OUT=$OUT/window INVOLUTION_UNROLL_WINDOW=1 docs/gpu/run.sh targets: the same with every tap
#     unrolled (the loops of kernel versions up to v4), to time against the default row loop
#     OUT=$OUT/tiles INVOLUTION_TILE_WIDTH=8 docs/gpu/run.sh targets: the same with the Triton
#     kernels' 2-D pixel tiles, 8 pixels wide, to time against the default flat tiles
#   docs/gpu/run.sh sweeps [NAME...] the timer's calibration, then each sweep (default: gpu, then
#                                    paper with --tf32) on each of $BACKENDS
#
# The GPU tool's limits (2026-12): 15 minutes of device time a session, the machine's start (a minute
# or two) included; 10 minutes a call; at most 8 files come back from $OUT, no more than 2 folders
# down. So each sweep's run directory comes back as one archive, $OUT/<sweep>-<backend>.tar.gz
# (rebuilt every 20 s while the sweep runs, so that a call cut off at its limit still brings back the
# rows finished so far; resume with --resume after unpacking it), and a call's files are listed at
# its end with a warning where they exceed what comes back. One call of about 9.5 minutes a session
# (timeout_s 570), each a step of its own, in this order (each session takes the first not yet done):
#   1. TARGET_LIMIT=270 docs/gpu/run.sh targets          issue 12: the v3-v9 kernels' first timing, both
#      backends (6 files: targets-<backend>.csv/.md/.log); every fused layer checked against shiftsum's
#      outputs and gradients on the GPU (rel_err_vs_shiftsum; a wrong one meets no target)
#   2. BACKENDS=torch LIMIT_GPU=480 docs/gpu/run.sh sweeps gpu     issue 11: a >= 300-case sweep in 8 minutes
#   3. BACKENDS=jax   LIMIT_GPU=480 docs/gpu/run.sh sweeps gpu
#   4. LIMIT_PAPER=260 docs/gpu/run.sh sweeps paper                both backends' paper sweeps, TF32 allowed
#   5. the window and tile variants of `targets` (OUT=$OUT/window ..., one backend a call: the window
#      variant compiles ten times longer, PERF.md section 18), and `check` (TEST_LIMIT=100: five pytest
#      runs of the kernels compiled for the GPU)
# With minutes left after a call (the machine stays warm 30 s), `check` with TEST_LIMIT=30 fits.
# Each sweep's wall time and per-case overhead (issue 11's 8 minutes and 0.5 s) are in its log and in
# the report's summary ("What each run cost", per session: a resumed run has one per call).
# docs/gpu/rehearse.sh runs these calls on a CPU machine with the GPU machine's versions first.
# Everything it writes goes under $OUT (default: ./gpu-out).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
log() { echo "== $(date -u +%H:%M:%S) $*"; }
# pack DIR: DIR as one archive, $OUT/<name of DIR>.tar.gz, replaced whole (what comes back is a
# complete archive, or the previous one and a .partial beside it)
pack() {
  local name partial; name=$(basename "$1"); partial="$OUT/$name.tar.gz.partial$BASHPID"
  # GNU tar exits 1 when a file changed while it read it (a row appended): the archive is still whole
  tar -czf "$partial" -C "$(dirname "$1")" "$name" 2>/dev/null
  if [ $? -le 1 ]; then mv -f "$partial" "$OUT/$name.tar.gz"; else rm -f "$partial"; fi
}
# What the call leaves under $OUT, and whether the GPU tool brings it all back.
out_check() {
  local files deep
  files=$(find "$OUT" -type f | wc -l)
  deep=$(find "$OUT" -mindepth 4 -type f | wc -l)
  echo "== \$OUT holds $files file(s): $(cd "$OUT" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')"
  [ "$files" -le 8 ] && [ "$deep" -eq 0 ] \
    || echo "== WARNING: the GPU tool brings back at most 8 files, no more than 2 folders down: some of these stay behind"
}
trap out_check EXIT

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
    log "the layer's stride pooling on the GPU against NumPy (PyTorch's avg_pool2d with ceil_mode; JAX)"
    for backend in torch jax; do
      KERAS_BACKEND=$backend timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider --maxfail=3 \
        tests/layers/test_pooling.py 2>&1 | tail -5
    done
    ;;
  targets)
    shift
    # The layer cases are compiled first in worker processes (on the host's 16 cores), for a third of
    # the limit at most; the timing then loads their code from the caches (rows: compile_cache).
    precompile=()
    [ "${PRECOMPILE:-12}" != 0 ] && precompile=(--precompile "${PRECOMPILE:-12}" \
      --precompile-time "${PRECOMPILE_TIME:-$(( ${TARGET_LIMIT:-240} / 3 ))}")
    for backend in ${BACKENDS:-torch jax}; do
      log "targets on $backend"
      KERAS_BACKEND=$backend timeout "${TARGET_LIMIT:-240}" python3 -m bench.targets --out "$OUT" \
        "${precompile[@]}" "$@" 2>&1 | grep -v "^WARNING\|oneDNN\|cuda_" | tee "$OUT/targets-$backend.log" | tail -45
    done
    ;;
  sweeps)
    # Run directories live in $RUNS (kept while the machine stays warm; a cold
    # machine gets them from .gpu-runs/, carried along: the archives an earlier
    # call brought back, or run directories) and come back as archives, so a
    # sweep cut off by its limit is resumed by the next call.
    shift
    sweeps=("${@:-gpu paper}")
    RUNS=${RUNS:-/tmp/runs}
    mkdir -p "$RUNS"
    if [ -d .gpu-runs ]; then
      for archive in .gpu-runs/*.tar.gz; do [ -f "$archive" ] && tar -xzf "$archive" -C "$RUNS"; done
      find .gpu-runs -mindepth 1 -maxdepth 1 -type d -exec cp -rn {} "$RUNS"/ \;
    fi
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
        # An archive every 20 s as well, so that a call the GPU tool cuts off at its own limit (which
        # leaves no time for packing after the sweep) still brings back the rows finished so far.
        ( while sleep 20; do [ -d "$dir" ] && pack "$dir"; done ) &
        copier=$!
        KERAS_BACKEND=$backend timeout "${!limit_var:-480}" python3 -m pytest bench --benchmark-only -q \
          -p no:cacheprovider --sweep "$sweep" "${extra[@]}" "${start[@]}" --no-report \
          --benchmark-columns=median,rounds 2>&1 | grep -v "^test_case\[" | tail -40 | tee -a "$logfile"
        kill "$copier" 2>/dev/null; wait "$copier" 2>/dev/null
        log "end of sweep $sweep on $backend: $(wc -l < "$dir/results.jsonl") rows" | tee -a "$logfile"
        pack "$dir"
      done
    done
    ;;
esac
