#!/usr/bin/env bash
# The sanitizer jobs (issue 7), run by .ci/run after the README's test command:
#  1. ASan + UBSan (clang, RelWithDebInfo): the engine, the app core, the CLI and every unit,
#     model and app test (the GUI, which needs an instrumented Qt to mean anything, is left to the
#     main build); the libFuzzer targets are built in the same tree and each then runs for
#     FUZZ_SECONDS (default 60) through tests/fuzz/run.sh.
#  2. TSan (clang): the thread pool tests, the ask pipeline (engine threads, cancellation from a
#     callback, snapshots, the CLI) and the disk-full test. The 50-kill test is left to the ASan
#     job (its children are single-threaded; under TSan it alone takes 90 s). Then the Qt
#     EngineWorker tests: Debian's Qt is not built with TSan, so app/gui/qt_tsan.h models its
#     queued calls for TSan and tsan-qt.supp names the one piece of Qt bookkeeping left; a canary
#     with a deliberate race proves the model hides nothing else (docs/reliability.md).
# Any sanitizer report fails the test that produced it (halt_on_error), so ctest goes red.
# Usage: tests/sanitizers/run.sh [asan|tsan|fuzz ...]  (default: all three)
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=$(nproc)
python=${RECUR_PYTHON:-$PWD/.venv/bin/python}
stages=${*:-asan fuzz tsan}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"

for stage in $stages; do
  case $stage in
    asan)
      echo "== ASan + UBSan build and tests (build-san)"
      CC=clang CXX=clang++ cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DRECUR_SANITIZE="address;undefined" -DRECUR_FUZZ=ON -DRECUR_BUILD_GUI=OFF -DRECUR_CUDA=OFF \
        -DRECUR_PYTHON="$python" >/dev/null
      cmake --build build-san -j"$jobs" >/dev/null
      # Three end-to-end numerical tests are left out here: each takes 2-3 minutes under ASan
      # and runs the same kernels and file paths as faster tests in this suite (they all pass in
      # the main build). Everything else runs.
      ctest --test-dir build-san -j"$jobs" --output-on-failure -LE gpu \
        -E 'CliQuality.KlAgainstAnUntrainedHybrid|Distill.TrainingReducesTheLossDeterministically|CliQuality.PasskeyRunsAndIsWellFormed'

      ;;
    fuzz)
      echo "== fuzzers, ${FUZZ_SECONDS:-60} s each (build-san)"
      FUZZ_BUILD=build-san tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"
      ;;
    tsan)
      echo "== TSan build and thread tests (build-tsan)"
      CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECUR_SANITIZE=thread \
        -DRECUR_BUILD_GUI=ON -DRECUR_CUDA=OFF -DRECUR_PYTHON="$python" >/dev/null
      cmake --build build-tsan -j"$jobs" \
        --target recur_unit_tests recur_app_tests gui_test_engine_worker tsan_canary >/dev/null
      build-tsan/tests/recur_unit_tests --gtest_filter='ThreadPool.*'
      build-tsan/tests/recur_app_tests --gtest_filter='Ask.*:CrashSafety.FileSize*'
      # The Qt worker: Debian's Qt is not built with TSan; app/gui/qt_tsan.h models its queued
      # calls and tsan-qt.supp names what is left of Qt's own bookkeeping.
      export TSAN_OPTIONS="$TSAN_OPTIONS suppressions=$PWD/tests/sanitizers/tsan-qt.supp"
      QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=$PWD/build-tsan/gui-runtime \
        build-tsan/tests/gui_test_engine_worker
      # ...and the hooks must not hide a real race: the canary has one, TSan must report it.
      if QT_QPA_PLATFORM=offscreen TSAN_OPTIONS="$TSAN_OPTIONS halt_on_error=0" \
        build-tsan/tests/tsan_canary >build-tsan/canary.log 2>&1; then
        echo "tsan canary: TSan reported no race where there is one (see build-tsan/canary.log)"; exit 1
      fi
      if ! grep -q "tsan_canary.cpp:" build-tsan/canary.log; then
        echo "tsan canary: no data race report naming tsan_canary.cpp"; cat build-tsan/canary.log; exit 1
      fi
      echo "tsan canary: the deliberate race was reported, as it must be"
      ;;
    *) echo "unknown stage '$stage' (asan, fuzz, tsan)"; exit 2 ;;
  esac
done
