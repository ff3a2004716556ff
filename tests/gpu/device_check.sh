#!/usr/bin/env bash
# The one command a lent GPU machine runs (docs/perf/gpu.md, "How to run it"): run.sh (parity
# tests, the CLI on the GPU, benchmarks, GEMV sweep, memcheck), then the per-kernel profile of
# the Llama-1B model as original and as 50% hybrid (profile.sh). A device run brings back at most
# 8 files, so everything goes into one archive, $OUT/gpu-results.tar.gz, refreshed after each
# stage (a run stopped at its time limit still returns what was done), plus table.txt beside it.
# Usage: tests/gpu/device_check.sh [WORKDIR]   (default /tmp/recur-gpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/recur-gpu}
final=${OUT:-}
res=$work/results
mkdir -p "$res/profile-original" "$res/profile-hybrid"
pack() {
  [[ -n $final ]] || return 0
  tar -C "$work" -czf "$final/gpu-results.tar.gz.part" results && mv "$final/gpu-results.tar.gz.part" "$final/gpu-results.tar.gz"
  cp "$res/table.txt" "$final/" 2>/dev/null
  true
}
OUT=$res tests/gpu/run.sh "$work" 2>&1 | tee "$res/run.log"
pack
OUT=$res/profile-original tests/gpu/profile.sh "$work" 2>&1 | tee "$res/profile-original/profile.log"
pack
OUT=$res/profile-hybrid NCU_TIMEOUT=${NCU_TIMEOUT_HYBRID:-120} \
  tests/gpu/profile.sh "$work" "$work/models/llama-1b-f16.gguf.h50" 2>&1 | tee "$res/profile-hybrid/profile.log"
pack
