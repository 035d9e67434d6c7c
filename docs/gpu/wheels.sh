#!/usr/bin/env bash
# Fetch, on a machine with a package index, the wheels the GPU machine lacks
# (it has PyTorch, JAX, Triton and CuPy, no network): Keras and the small
# pure-Python packages it needs, for CPython 3.12 on x86-64 Linux, into .whl/
# of the repository (ignored by git). run.sh installs them on the GPU machine.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(keras==3.15.1 namex optree nvidia-ml-py jax-triton==0.3.1)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${packages[@]}"
ls -l .whl
