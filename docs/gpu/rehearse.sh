#!/usr/bin/env bash
# A rehearsal of docs/gpu/run.sh on a CPU machine, before a GPU is lent: the same commands, with the
# GPU machine's Python and packages (docs/PERF.md section 7: Python 3.12, PyTorch 2.11 and its Triton
# 3.6, JAX 0.11.2) and the wheels of .whl/ installed the way run.sh installs them. Without a GPU the
# fused kernels run in Triton's and Pallas' interpreters and the sweeps time the CPU: nothing it
# prints is a GPU figure. What it checks is that every call of the GPU plan starts, runs and writes
# its rows with those versions (docs/PERF.md section 19 has what it found the first time).
#   docs/gpu/rehearse.sh [tests] [targets] [sweeps] [bindings]   (default: the first three)
# bindings: jax-triton's kernel calls built by jaxlib's real CUDA Triton bindings (the jax-cuda13
# plugin of the same JAX, in an environment layered over $VENV), only the device query stood in for
# (docs/gpu/jax_triton_bindings.py).
# PYTHON312: a Python 3.12 (default: python3.12 on PATH, else pyenv's newest 3.12). The environment
# is built once in $VENV (default ~/.cache/involution-bench/gpu-rehearsal, about 5 GB: PyTorch's
# CUDA build and its CUDA libraries, as on the GPU machine). Output under $OUT (default
# /tmp/gpu-rehearsal-out).
set -uo pipefail
cd "$(git rev-parse --show-toplevel)" || exit 1
# The GPU machine's versions of what it has (docs/PERF.md sections 7 and 19); .whl/ brings the rest
# (docs/gpu/wheels.sh).
# NumPy 2.5.2 as the GPU machine has it (the device tool's list of its packages, 2026-11-17), with
# which Triton 3.6's interpreter fails: the steps that run the kernels in it (tests, targets) put
# NumPy 2.3.5 ahead of it ($VENV-interpreter); on the GPU the kernels are compiled, not interpreted.
GPU_MACHINE=(torch==2.11.0 triton==3.6.0 jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 pandas matplotlib seaborn
  jinja2 pytest pytest-benchmark tensorboard rich h5py absl-py scipy scikit-image psutil nvidia-ml-py)
VENV=${VENV:-$HOME/.cache/involution-bench/gpu-rehearsal}
OUT=${OUT:-/tmp/gpu-rehearsal-out}
log() { echo "== $(date -u +%H:%M:%S) $*"; }

if [ ! -x "$VENV/bin/python3" ]; then
  python=
  for candidate in ${PYTHON312:-python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12}; do
    "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { python=$candidate; break; }
  done
  [ -n "$python" ] || { echo "rehearse.sh: no Python 3.12 found; set PYTHON312 to one. Received: PYTHON312=${PYTHON312:-}" >&2; exit 2; }
  log "building $VENV with $python"
  "$python" -m venv "$VENV" && "$VENV/bin/pip" install -q --no-compile "${GPU_MACHINE[@]}" || exit 1
fi
ls .whl/*.whl >/dev/null 2>&1 || docs/gpu/wheels.sh >/dev/null || exit 1
interpreter=$VENV-interpreter
[ -d "$interpreter/numpy" ] || "$VENV/bin/pip" install -q --no-deps --no-compile --target "$interpreter" numpy==2.3.5 \
  || exit 1
export PATH=$VENV/bin:$PATH   # run.sh calls python3
mkdir -p "$OUT"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests targets sweeps)
for step in "${steps[@]}"; do
  case $step in
    tests)    # run.sh's `check`: the fused kernels' tests (here in the interpreters)
      mkdir -p "$OUT/tests"
      PYTHONPATH=$interpreter TEST_LIMIT=${TEST_LIMIT:-900} OUT=$OUT/tests docs/gpu/run.sh check 2>&1 | grep -v "nvidia-smi" \
        | tee "$OUT/check.log" ;;
    targets)  # run.sh's `targets` on one small stage: the interpreters are slow
      PYTHONPATH=$interpreter OUT=$OUT/targets PRECOMPILE=2 docs/gpu/run.sh targets --stages 8:32:2 --batch 2 \
        --time 0.05 --min-rounds 3 2>&1 | grep "^== .OUT\|WARNING: the GPU tool\|precompile:"
      for backend in torch jax; do
        echo "targets on $backend: $(($(wc -l < "$OUT/targets/targets-$backend.csv") - 1)) rows in $OUT/targets/targets-$backend.csv"
      done ;;
    sweeps)   # run.sh's `sweeps gpu` on each backend, each cut at LIMIT_GPU as a GPU call would be
      rm -rf "$OUT/runs" "$OUT/sweeps"; mkdir -p "$OUT/sweeps"
      RUNS=$OUT/runs OUT=$OUT/sweeps LIMIT_GPU=${LIMIT_GPU:-240} PRECOMPILE=${PRECOMPILE:-2} SKIP_CALIBRATION=1 \
        docs/gpu/run.sh sweeps gpu 2>&1 | grep "^== .*sweep\|^== .OUT\|WARNING: the GPU tool" ;;
    bindings)
      plugin=$VENV-plugin
      if [ ! -x "$plugin/bin/python3" ]; then
        "$VENV/bin/python3" -m venv "$plugin" || exit 1
        "$VENV/bin/python3" -c 'import site; print(site.getsitepackages()[0])' \
          > "$("$plugin/bin/python3" -c 'import site; print(site.getsitepackages()[0])')/zz-rehearsal.pth"
        "$plugin/bin/pip" install -q --no-deps --no-compile \
          "jax-cuda13-plugin==$("$VENV/bin/python3" -c 'import jax; print(jax.__version__)')" || exit 1
      fi
      python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
      PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax "$plugin/bin/python3" docs/gpu/jax_triton_bindings.py 2>&1 \
        | grep -v "^WARNING\|^[EW]0000" | tee "$OUT/bindings.log" ;;
    *) echo "rehearse.sh: steps are tests, targets, sweeps and bindings. Received: $step" >&2; exit 2 ;;
  esac
done
