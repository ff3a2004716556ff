#!/usr/bin/env bash
# Where the GPU time goes, kernel by kernel, under Nsight Compute (docs/perf/gpu.md): run after
# tests/gpu/run.sh, on its work folder (it reuses the generated models).
#   1. every kernel of one prefill and of a few decode steps of MODEL (graph nodes profiled one
#      by one), timed with warm caches: kernels.csv, and a summary per kernel name in
#      kernels.txt (decode: µs per token; the sum against the graph's measured time per token
#      is what launch gaps cost);
#   2. the detailed sections (speed of light, occupancy, warp stalls) of one prefill attention
#      launch and of the four decode GEMVs of one layer: sections.txt.
# Usage: tests/gpu/profile.sh [WORKDIR] [MODEL]   (default /tmp/recur-gpu, its llama-1b-f16.gguf)
set -uo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/recur-gpu}
model=${2:-$work/models/llama-1b-f16.gguf}
stage=$PWD/build-gpu-stage
bin=${BIN:-$stage/bin}
py=${PYTHON:-python3}
export LD_LIBRARY_PATH="$stage/lib:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
save() { [[ -n ${OUT:-} ]] && cp "$@" "$OUT/" 2>/dev/null; true; }
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[[ -n $ncu && -f $model ]] || { echo "profile.sh: need ncu and $model" >&2; exit 1; }

# 2048-token prefill (one batch), then 4 decode steps; the bench's warm-up runs the same first.
timeout "${NCU_TIMEOUT:-150}" "$ncu" --graph-profiling node --metrics gpu__time_duration.sum --cache-control none \
  --clock-control none --print-kernel-base function --csv --page raw \
  "$bin/recur_gpu_bench" run -m "$model" -c 2052 -n 4 >"$work/kernels.csv" 2>"$work/ncu.err"
echo "ncu rc $? ($(wc -l <"$work/kernels.csv") lines)" >&2
"$py" - "$work/kernels.csv" >"$work/kernels.txt" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]; name_i = cols.index("Kernel Name"); t_i = cols.index("gpu__time_duration.sum")
ks = []
for r in rows[head + 1:]:
    try: ks.append((r[name_i], float(r[t_i].replace(",", ""))))  # ncu may print 1,234
    except (ValueError, IndexError): pass          # the units row
if not any("attn_prefill" in n for n, _ in ks):
    print(f"no prefill attention kernel among {len(ks)} kernels; header {cols[:8]}; names {sorted(set(n for n, _ in ks))[:20]}")
    sys.exit(0)
unit = rows[head + 1][t_i] if len(rows) > head + 1 else "?"
# Timed prefill: the second half of the kernels up to the last prefill attention launch's layer
# block; decode: from the first embedding lookup after the last prefill attention kernel.
last_pre = max(i for i, (n, _) in enumerate(ks) if "attn_prefill" in n)
dec0 = next(i for i in range(last_pre, len(ks)) if "get_rows" in ks[i][0])
# The timed prefill: from the last embedding lookup before its last attention launch.
pre_starts = [i for i, (n, _) in enumerate(ks[:last_pre]) if "get_rows" in n]
pre0 = pre_starts[-1]
# Timed decode steps are graph replays at the end; count their embedding lookups.
dec = ks[dec0:]
steps = sum(1 for n, _ in dec if "get_rows" in n)
def table(part, div, label):
    agg = collections.OrderedDict()
    for n, t in part:
        c, s = agg.get(n, (0, 0.0)); agg[n] = (c + 1, s + t)
    total = sum(s for _, s in agg.values())
    print(f"\n{label} (unit {unit}, divided by {div})")
    for n, (c, s) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {n[:60]:<60}{c // div:>6} launches{s / div:>14.1f}{100 * s / total:>7.1f}%")
    print(f"  {'total':<60}{sum(c for c, _ in agg.values()) // div:>6}{total / div:>23.1f}")
table(ks[pre0:dec0], 1, "timed prefill, per prefill")
table(dec, max(steps, 1), f"decode, per token ({steps} steps)")
EOF
cat "$work/kernels.txt"

# Detailed sections: one prefill attention launch (the timed prefill's first) and one layer's
# four decode GEMVs (the first, eager decode step: q/k/v, o, gate/up, down).
sec=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis)
{
  timeout 60 "$ncu" "${sec[@]}" --cache-control none --clock-control none -k regex:attn_prefill --launch-skip 16 --launch-count 1 \
    "$bin/recur_gpu_bench" run -m "$model" -c 2052 -n 4 2>&1 | grep -v '^{'
  timeout 60 "$ncu" "${sec[@]}" --cache-control none --clock-control none -k regex:gemv_vec --launch-skip 1 --launch-count 4 \
    "$bin/recur_gpu_bench" run -m "$model" -c 2052 -n 4 2>&1 | grep -v '^{'
} >"$work/sections.txt"
echo "sections: $(grep -c 'Section: GPU Speed Of Light' "$work/sections.txt") kernels" >&2
tail -3 "$work/ncu.err" >&2
save "$work/kernels.txt" "$work/sections.txt" # (run.sh brings back 6 files; a device run brings 8)
