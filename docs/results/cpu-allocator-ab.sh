#!/usr/bin/env bash
# docs/PERF.md, sections 33 and 34: the RedNet-stage sweep (3 processes a case) on
# each backend, and JAX's `quick`, first with the C allocator as the process gets
# it ("default"), then with each other SETTING; then `compare` of each pair.
#   keep      glibc keeping large blocks for reuse (its mmap and trim thresholds raised)
#   tcmalloc  gperftools' tcmalloc loaded first (Debian: libtcmalloc-minimal4)
#   jemalloc  jemalloc loaded first (Debian: libjemalloc2)
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
libraries=/usr/lib/$(uname -m)-linux-gnu
setting_env() {  # SETTING: the variables that select it, one per line
  case $1 in
    default) ;;
    keep) printf '%s\n' MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 ;;
    tcmalloc) echo "LD_PRELOAD=$libraries/libtcmalloc_minimal.so.4" ;;
    jemalloc) echo "LD_PRELOAD=$libraries/libjemalloc.so.2" ;;
    *) echo "cpu-allocator-ab.sh: unknown setting; use keep, tcmalloc or jemalloc. Received: setting=$1" >&2
       return 2 ;;
  esac
}
for setting in "${settings[@]}"; do
  variables=$(setting_env "$setting")
  case $variables in
    LD_PRELOAD=*) [ -e "${variables#LD_PRELOAD=}" ] || {
      echo "cpu-allocator-ab.sh: ${variables#LD_PRELOAD=} is missing; install it (apt-get install libtcmalloc-minimal4 libjemalloc2). Received: setting=$setting" >&2
      exit 2; } ;;
  esac
done
sweep() {  # BACKEND SETTING RUN_NAME [pytest arguments]
  local backend=$1 setting=$2 name=$3 variables
  shift 3
  variables=$(setting_env "$setting")
  # shellcheck disable=SC2086  # one variable per word
  env $variables KERAS_BACKEND="$backend" TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg \
    python -m pytest bench --benchmark-only -q --run-dir "$out/$name-$setting" "$@"
}
for backend in tensorflow jax torch; do
  for setting in default "${settings[@]}"; do
    sweep "$backend" "$setting" "$backend" --sweep docs/results/cpu-stages.toml --passes 3
  done
done
for setting in default "${settings[@]}"; do
  sweep jax "$setting" jax-quick
done
for name in tensorflow jax torch jax-quick; do
  for setting in "${settings[@]}"; do
    python -m reports compare "$out/$name-default" "$out/$name-$setting" --threshold 5% || true
  done
done
