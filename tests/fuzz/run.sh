#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each one, seeded from ../shared
# and tests/fuzz/seeds. A crash is kept in tests/fuzz/crashes/ (turn it into a regression input
# under tests/fuzz/regressions/<target>/ once fixed: those run first on every later run).
#
# Usage: tests/fuzz/run.sh [SECONDS]          each target for SECONDS (default 60; CI uses 60)
#        RUNS=1000000 tests/fuzz/run.sh       each target until it has executed RUNS inputs
# Environment: TARGETS="gguf tokenizer state import store" (default all), JOBS (targets run at
# once, default: the number of cores), FUZZ_BUILD (build folder, default build-fuzz; CI passes the
# sanitizer build, which already has the targets).
# Prints one line per target: executions, time, executions per second; exit 1 on any finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
runs=${RUNS:-}
build=${FUZZ_BUILD:-build-fuzz}
targets=${TARGETS:-gguf tokenizer state import store}
jobs=${JOBS:-$(nproc)}
shared="$(cd .. && pwd)/shared"
[[ -d "$shared/models" ]] || shared="${RECUR_SHARED_DIR:-$shared}"

if [[ -z ${FUZZ_BUILD:-} ]]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_FUZZ=ON \
    -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_APP=ON -DRECUR_BUILD_GUI=OFF -DRECUR_CUDA=OFF \
    -DRECUR_SANITIZE="address;undefined" -DRECUR_SHARED_DIR="$shared" >/dev/null
  cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' $targets) >/dev/null
fi

corpus="$build/corpus"
mkdir -p tests/fuzz/crashes
for t in $targets; do mkdir -p "tests/fuzz/regressions/$t"; done
mkdir -p "$corpus"/{gguf,tokenizer,state,import,store} # the seeds below go to all, whatever TARGETS says
# Seeds: model and vocabulary headers (the metadata and tensor table; the weights add nothing but
# length), slices of the real texts, hand-made documents, and tiny models, databases and state
# files the targets write themselves (RECUR_FUZZ_SEED_DIR).
for f in "$shared"/models/stories260K.gguf "$shared"/models/vocab/*.gguf; do
  head -c 32768 "$f" >"$corpus/gguf/$(basename "$f").head"
done
for f in "$shared"/data/*.txt "$shared"/models/vocab/*.inp; do
  head -c 256 "$f" >"$corpus/tokenizer/$(basename "$f")"
  head -c 4096 "$f" >"$corpus/import/$(basename "$f")" 2>/dev/null || true
done
[[ -d "$corpus/import" ]] && cp tests/fuzz/seeds/import/* "$corpus/import/"

# Input size limits: long inputs only slow each execution down without reaching new code. (state:
# the 33-token stories260K state seed is 23 KiB; at 16 KiB libFuzzer read only its first part.)
max_len_of() {
  case $1 in
    gguf) echo 32768 ;; tokenizer) echo 256 ;; state) echo 32768 ;; import) echo 4096 ;; store) echo 65536 ;;
  esac
}

run_one() {
  local t=$1 log="$build/fuzz_$1.log" limit
  if [[ -n $runs ]]; then limit="-runs=$runs"; else limit="-max_total_time=$seconds"; fi
  local start=$SECONDS
  if RECUR_SHARED_DIR="$shared" RECUR_FUZZ_SEED_DIR="$corpus/$t" UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$build/tests/fuzz/fuzz_$t" "$corpus/$t" "tests/fuzz/regressions/$t" $limit -rss_limit_mb=4096 \
      -max_len="$(max_len_of "$t")" -timeout=30 -artifact_prefix="tests/fuzz/crashes/$t-" -print_final_stats=1 \
      >"$log" 2>&1; then
    local n elapsed=$((SECONDS - start))
    n=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    echo "fuzz_$t: ${n:-?} executions in ${elapsed}s ($(( ${n:-0} / (elapsed > 0 ? elapsed : 1) ))/s), no finding"
  else
    echo "fuzz_$t: FINDING (see $log and tests/fuzz/crashes/)"
    # CI keeps only its console, so everything needed to reproduce goes there: the report (what
    # the sanitizer, libFuzzer, std::terminate or a library check said; status lines left out)
    # and, when small, the input itself (xz + base64: `base64 -d | xz -d > input`).
    local report
    report=$(grep -v -E '^#[0-9]+\s|^(INFO|MS|Base|\"|[*]{6})' "$log" | grep -A40 -m1 -E \
      "ERROR|runtime error|terminate called|what\(\)|Check failed|deadly signal" | head -n 60 || true)
    if [[ -n $report ]]; then echo "$report"; else tail -n 20 "$log"; fi # no known pattern: the end
    local artifact
    for artifact in tests/fuzz/crashes/"$t"-*; do
      [[ -f $artifact ]] || continue
      echo "fuzz_$t: input $(basename "$artifact"), $(stat -c %s "$artifact") bytes"
      if command -v xz >/dev/null && (( $(xz -9 -c "$artifact" | wc -c) <= 8192 )); then
        echo "fuzz_$t: xz+base64 of it:"; xz -9 -c "$artifact" | base64 -w 0; echo
      fi
    done
    return 1
  fi
}

status=0
pids=()
for t in $targets; do
  run_one "$t" &
  pids+=($!)
  if (( ${#pids[@]} >= jobs )); then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
