#!/usr/bin/env bash
# docs/PERF.md, sections 33 and 34: the RedNet-stage sweep (3 processes a case) on
# each backend, and JAX's `quick`, first with the C allocator as the process gets
# it ("system"), then with each other SETTING, a choice of the sweep's
# --c-allocator (bench/allocators.py: keep, tcmalloc, jemalloc); then `compare` of
# each pair.
# Run from the repository root, in an environment with every backend
# (`pip install -e ".[test,jax,torch]"`); about 10 minutes a setting on 2 cores.
#
#   docs/results/cpu-allocator-ab.sh OUT_DIR [SETTING...]   (default settings: keep)
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "cpu-allocator-ab.sh takes the folder for the runs, then settings (keep, tcmalloc, jemalloc). Received: 0 arguments" >&2
  exit 2
fi
out=$1
shift
settings=("${@:-keep}")
# bench.allocators has the settings (the sweep's --c-allocator): each one known and installed, before any sweep
python -m bench.allocators "${settings[@]}" || exit 2
sweep() {  # BACKEND SETTING RUN_NAME [pytest arguments]
  local backend=$1 setting=$2 name=$3
  shift 3
  KERAS_BACKEND="$backend" TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg \
    python -m pytest bench --benchmark-only -q --c-allocator "$setting" --run-dir "$out/$name-$setting" "$@"
}
for backend in tensorflow jax torch; do
  for setting in system "${settings[@]}"; do
    sweep "$backend" "$setting" "$backend" --sweep docs/results/cpu-stages.toml --passes 3
  done
done
for setting in system "${settings[@]}"; do
  sweep jax "$setting" jax-quick
done
for name in tensorflow jax torch jax-quick; do
  for setting in "${settings[@]}"; do
    python -m reports compare "$out/$name-system" "$out/$name-$setting" --threshold 5% || true
  done
done
