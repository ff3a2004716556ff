#!/usr/bin/env bash
# CPU benchmark behind docs/perf/cpu.md: the machine's roofline (recur-probe), then recur bench on
# SmolLM2-135M stored as F32, F16, Q8_0, Q4_0 (made from the shipped Q4_1 with recur quantize) and
# Q4_1, at 512 and 4096 tokens, and the 50% hybrid against the original at depth 4096 — all in
# one run, same threads. Prints one JSON object per line.
# Usage: tests/perf/cpu_bench.sh [THREADS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
work=${2:-/tmp/recur-bench}
recur=build/app/recur
src="${RECUR_MODEL:-${XDG_DATA_HOME:-$HOME/.local/share}/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
mkdir -p "$work"
for t in f32 f16 q8_0 q4_0; do
  [[ -f "$work/smollm2-$t.gguf" ]] || $recur quantize -m "$src" -o "$work/smollm2-$t.gguf" --type $t >/dev/null
done
ln -sf "$src" "$work/smollm2-q4_1.gguf"
[[ -f "$work/smollm2-q4_1-h50.gguf" ]] ||
  $recur convert -m "$src" -f ../shared/data/prideprejudice.txt -c 2048 --fraction 0.5 --steps 0 -o "$work/smollm2-q4_1-h50.gguf" --json >/dev/null

echo "{\"probe\":$(build/app/recur-probe -t "$threads")}"
for t in f32 f16 q8_0 q4_0 q4_1; do
  m="$work/smollm2-$t.gguf"
  echo "{\"type\":\"$t\",\"run\":\"p512_n128\",\"bench\":$($recur bench -m "$m" -t "$threads" -p 512 -n 128 -r 2 --json)}"
  echo "{\"type\":\"$t\",\"run\":\"p4096\",\"bench\":$($recur bench -m "$m" -t "$threads" -p 4096 -n 0 --json)}"
  echo "{\"type\":\"$t\",\"run\":\"d4096_n64\",\"bench\":$($recur bench -m "$m" -t "$threads" -p 0 -d 4096 -n 64 --json)}"
done
for m in smollm2-q4_1 smollm2-q4_1-h50; do
  echo "{\"model\":\"$m\",\"run\":\"d4096_n64\",\"bench\":$($recur bench -m "$work/$m.gguf" -t "$threads" -p 0 -d 4096 -n 64 --json)}"
done
