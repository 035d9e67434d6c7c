#!/usr/bin/env bash
# docs/PERF.md, section 33: the RedNet-stage sweep (3 processes a case) on each
# backend, and JAX's `quick`, first with the C allocator as the process gets it,
# then with glibc keeping large blocks for reuse ("keep"); then `compare` of
# each pair. Run from the repository root, in an environment with every
# backend (`pip install -e ".[test,jax,torch]"`); about 20 minutes on 2 cores.
#
#   docs/results/cpu-allocator-ab.sh OUT_DIR
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "cpu-allocator-ab.sh takes one argument, the folder for the runs. Received: $# arguments" >&2
  exit 2
fi
out=$1
keep=(MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000)
sweep() {  # BACKEND SETTING RUN_NAME [pytest arguments]
  local backend=$1 setting=$2 name=$3
  shift 3
  local extra=()
  [ "$setting" = keep ] && extra=("${keep[@]}")
  env "${extra[@]}" KERAS_BACKEND="$backend" TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg \
    python -m pytest bench --benchmark-only -q --run-dir "$out/$name-$setting" "$@"
}
for backend in tensorflow jax torch; do
  for setting in default keep; do
    sweep "$backend" "$setting" "$backend" --sweep docs/results/cpu-stages.toml --passes 3
  done
done
for setting in default keep; do
  sweep jax "$setting" jax-quick
done
for name in tensorflow jax torch jax-quick; do
  python -m reports compare "$out/$name-default" "$out/$name-keep" --threshold 5% || true
done
