#!/usr/bin/env bash
# The GPU check of issue 18: run it on a machine with a GPU (at most ~10 minutes on one GPU). Writes
# $OUT/gpu_check.json when OUT is set. Without CUDA it runs at toy sizes on the CPU and skips GPU parts.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/gpu_check.py "$@"
