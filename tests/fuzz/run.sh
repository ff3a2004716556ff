#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 60),
# seeded from ../shared. Crashes are kept in tests/fuzz/crashes/ as regression inputs.
# Usage: tests/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_FUZZ=ON \
  -DRECUR_BUILD_TESTS=OFF -DRECUR_BUILD_APP=OFF -DRECUR_BUILD_GUI=OFF -DRECUR_CUDA=OFF \
  -DRECUR_SANITIZE="address;undefined" -DRECUR_SHARED_DIR="$PWD/../shared" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_gguf fuzz_tokenizer fuzz_state >/dev/null
shared="$PWD/../shared"
mkdir -p build-fuzz/corpus/{gguf,tokenizer,state} tests/fuzz/crashes
# Seeds: the real model and vocabularies (headers only, to keep runs fast) and text samples.
for f in "$shared"/models/stories260K.gguf "$shared"/models/vocab/*.gguf; do
  head -c 65536 "$f" > "build-fuzz/corpus/gguf/$(basename "$f").head"
done
for f in "$shared"/data/*.txt "$shared"/models/vocab/*.inp; do
  head -c 4096 "$f" > "build-fuzz/corpus/tokenizer/$(basename "$f")"
done
status=0
for t in gguf tokenizer state; do
  log="build-fuzz/fuzz_$t.log"
  max_len=70000
  [[ $t == tokenizer ]] && max_len=1024 # long texts only slow the search down
  if ! UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz/fuzz_$t "build-fuzz/corpus/$t" tests/fuzz/regressions/$t \
      -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=$max_len -artifact_prefix=tests/fuzz/crashes/$t- \
      -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz_$t: FAILED (see $log)"; status=1
  fi
  runs=$(grep -E "stat::number_of_executed_units" "$log" | awk '{print $2}')
  echo "fuzz_$t: ${runs:-?} executions in ${seconds}s"
done
exit $status
