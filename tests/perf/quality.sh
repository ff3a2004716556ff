#!/usr/bin/env bash
# Quality of hybrids against their original model: the measurements behind docs/quality.md.
#
# For each fraction F and kind K: `recur convert` (recency-chosen groups, --kind K, --steps $STEPS),
# then `recur kl` on text the calibration did not see (perplexity of both models, KL, top-1
# agreement) and `recur passkey`. The original's passkey run is the baseline. Every command's
# JSON lands in $OUT; a markdown summary is printed and written to $OUT/summary.md.
#
#   tests/perf/quality.sh                      # SmolLM2-135M-Instruct, then stories260K
#   FRACTIONS="0.25" TRIALS=2 tests/perf/quality.sh
#
# Variables (defaults in brackets):
#   RECUR      the CLI [build/app/recur]            MODEL     [the installer's SmolLM2-135M-Instruct Q4_1]
#   SHARED     the shared/ folder [../shared]       OUT       where results go [build/quality]
#   CALIB      calibration text [prideprejudice]    CALIB_CTX tokens of it convert analyses [2048]
#   EVAL_TEXT  held-out text [debian-policy]        CTX, CHUNKS  kl chunking [512, 20]
#   FRACTIONS  [0.25 0.5]                           STEPS     distillation steps [0]; "default": no
#                                                             --steps (convert's default, 8000·0.25/F)
#   KINDS      convert --kind values [recurrent]: recurrent, window, window+recurrent, auto
#              (window ignores STEPS; auto trains recurrent and window+recurrent heads and picks per group)
#   SINKS      convert --sinks S for the window kinds [convert's default]; set: file names get _sS
#   PASSKEY    0: skip every passkey run [1]
#   AUTO_ARGS  more arguments for `convert --kind auto`, e.g. "--write-candidates" []
#   LENGTHS    passkey lengths [1k,2k,4k]           TRIALS    passkey trials per length [5]
#   SEED       passkey seed [42]                    THREADS   -t for every command [all cores]
#   STORIES    1: also the stories260K rows (self-sampled calibration/held-out stories) [1]
#   MAIN       0: leave out $MODEL's rows (with STORIES=1: stories260K alone) [1]
#   SUMMARY_ONLY  1: only rebuild $OUT/summary.md from the JSON already in $OUT
# The whole run took 25.8 min on the 2-core development VM while other builds shared its cores
# (13.1 min of CPU time); see docs/quality.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" # recur passkey's default filler path is relative to the repository root
RECUR=${RECUR:-$ROOT/build/app/recur}
SHARED=${SHARED:-$ROOT/../shared}
MODEL=${MODEL:-$HOME/.local/share/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CALIB=${CALIB:-$SHARED/data/prideprejudice.txt}
CALIB_CTX=${CALIB_CTX:-2048}
EVAL_TEXT=${EVAL_TEXT:-$SHARED/data/debian-policy-4.6.2.0.txt}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-20}
FRACTIONS=${FRACTIONS:-0.25 0.5}
STEPS=${STEPS:-0}
KINDS=${KINDS:-recurrent}
LENGTHS=${LENGTHS:-1k,2k,4k}
TRIALS=${TRIALS:-5}
SEED=${SEED:-42}
STORIES=${STORIES:-1}
MAIN=${MAIN:-1}
SINKS=${SINKS:-}
PASSKEY=${PASSKEY:-1}
read -r -a AUTO_EXTRA <<<"${AUTO_ARGS:-}"
SINK_ARGS=()
SINK_SFX=""
[[ -n "$SINKS" ]] && SINK_ARGS=(--sinks "$SINKS") && SINK_SFX="_s$SINKS"
OUT=${OUT:-$ROOT/build/quality}
THREAD_ARGS=()
[[ -n "${THREADS:-}" ]] && THREAD_ARGS=(-t "$THREADS")

for f in "$RECUR" "$MODEL" "$CALIB" "$EVAL_TEXT"; do
    [[ -e "$f" ]] || { echo "quality.sh: $f not found" >&2; exit 1; }
done
mkdir -p "$OUT"
TIMES="$OUT/times.tsv"

# run NAME CMD...: runs a recur command with --json into $OUT/NAME.json and logs its wall time.
run() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    "$RECUR" "$@" "${THREAD_ARGS[@]}" --json >"$OUT/$name.json"
    t1=$(date +%s.%N)
    printf '%s\t%.1f\n' "$name" "$(awk "BEGIN{print $t1 - $t0}")" >>"$TIMES"
    printf '  %-28s %6.1f s\n' "$name" "$(awk "BEGIN{print $t1 - $t0}")" >&2
}

# One model's rows: TAG MODEL CALIB EVAL_TEXT CTX CHUNKS PASSKEY_LENGTHS
measure() {
    local tag=$1 model=$2 calib=$3 text=$4 ctx=$5 chunks=$6 lengths=$7
    echo "== $tag" >&2
    if [[ "$PASSKEY" == 1 ]]; then
        run "${tag}_passkey_original" passkey -m "$model" -f "$CALIB" --lengths "$lengths" --trials "$TRIALS" --seed "$SEED"
    fi
    for F in $FRACTIONS; do
        for K in $KINDS; do
            local s=$STEPS sfx="f${F}_${K/+/}"
            [[ "$K" == window ]] && s=0
            local steps_args=(--steps "$s")
            [[ "$s" == default ]] && steps_args=()
            local sink_args=() extra=()
            [[ "$K" == auto ]] && extra=("${AUTO_EXTRA[@]}")
            if [[ "$K" != recurrent ]]; then
                sfx+=$SINK_SFX
                sink_args=("${SINK_ARGS[@]}")
            fi
            local h="$OUT/${tag}_${sfx}.gguf"
            run "${tag}_convert_$sfx" convert -m "$model" -f "$calib" -c "$CALIB_CTX" --fraction "$F" --kind "$K" "${steps_args[@]}" "${sink_args[@]}" "${extra[@]}" -o "$h"
            run "${tag}_kl_$sfx" kl -m "$model" --hybrid "$h" -f "$text" -c "$ctx" --chunks "$chunks"
            if [[ "$PASSKEY" == 1 ]]; then
                run "${tag}_passkey_$sfx" passkey -m "$h" -f "$CALIB" --lengths "$lengths" --trials "$TRIALS" --seed "$SEED"
            fi
        done
    done
}

# Every measurement, into $OUT.
measure_all() {
    : >"$TIMES"
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
        echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
        echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$OUT/machine.txt"

    [[ "$MAIN" == 1 ]] && measure main "$MODEL" "$CALIB" "$EVAL_TEXT" "$CTX" "$CHUNKS" "$LENGTHS"

    if [[ "$STORIES" == 1 ]]; then
        # stories260K knows only children's stories, so both texts are its own samples (different
        # seeds): calibration from seeds 1-20, held-out text from seeds 101-120.
        S=$SHARED/models/stories260K.gguf
        for range in "calib 1" "eval 101"; do
            set -- $range
            for i in $(seq 0 19); do
                "$RECUR" generate -m "$S" -p "" -n 400 --temp 1 --seed $(($2 + i)) --json "${THREAD_ARGS[@]}" |
                    python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])'
            done >"$OUT/stories_$1.txt"
        done
        measure stories "$S" "$OUT/stories_calib.txt" "$OUT/stories_eval.txt" 256 100 "256,512,1k"
    fi
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
}

[[ "${SUMMARY_ONLY:-0}" == 1 ]] || measure_all

python3 - "$OUT" "$FRACTIONS" "$STORIES" "$(basename "$MODEL" .gguf)" "$KINDS" "$SINK_SFX" "$MAIN" >"$OUT/summary.md" <<'EOF'
import json, os, sys
out, fractions, stories, model_name = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "1", sys.argv[4]
kinds, sink_sfx, main = sys.argv[5].split(), sys.argv[6], sys.argv[7] == "1"
times = dict(l.rstrip("\n").split("\t") for l in open(os.path.join(out, "times.tsv")))
def num(x, small):  # fixed decimals for ordinary values, none for the huge ones of broken models
    return f"{x:.{small}f}" if abs(x) < 1000 else f"{x:.0f}"
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
print(open(os.path.join(out, "machine.txt")).read())
names = {"main": model_name, "stories": "stories260K"}
for tag in (["main"] if main else []) + (["stories"] if stories else []):
    orig = load(f"{tag}_passkey_original")
    lens = [l["tokens"] for l in orig["lengths"]] if orig else []
    print(f"### {names[tag]}\n")
    hdr = "| model | groups replaced | KV kept | perplexity | ×original | KL (nats/token) | top-1 agree | " + \
          "".join(f"passkey {n} | " for n in lens) + "convert s | kl s | passkey s |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    sfx_of = lambda F, K: f"f{F}_{K.replace('+', '')}" + (sink_sfx if K != "recurrent" else "")
    k0 = load(f"{tag}_kl_{sfx_of(fractions[0], kinds[0])}")
    pk = lambda p: "".join(f"{l['correct']}/{l['trials']}" + ("†" if l["beyond_training_context"] else "") + " | "
                           for l in p["lengths"]) if p else ""
    ptime = lambda n: f"{float(times[n]):.0f}" if n in times else "–"
    print(f"| original | 0 | 100% | {k0['ppl_original']:.4f} | 1 | 0 | 100% | {pk(orig)}– | – | {ptime(tag + '_passkey_original')} |")
    for F in fractions:
      for K in kinds:
        sfx = sfx_of(F, K)
        c, k, p = load(f"{tag}_convert_{sfx}"), load(f"{tag}_kl_{sfx}"), load(f"{tag}_passkey_{sfx}")
        kk = c.get("kinds", {})
        what = K if K != "auto" else "auto (" + ", ".join(f"{n} {v}" for n, v in kk.items() if v) + ")"
        if K != "recurrent" and c.get("sinks"):
            what += f", {c['sinks']} sinks"
        print(f"| F={F}, {what}, steps {c['steps']} | {c['replaced_groups']}/{c['total_groups']} | "
              f"{100 * c['kv_fraction_kept']:.0f}% | {num(k['ppl_hybrid'], 4)} | {num(k['ppl_ratio'], 3)} | {k['kl']:.4f} | "
              f"{100 * k['top1_agreement']:.1f}% | {pk(p)}{float(times[f'{tag}_convert_{sfx}']):.0f} | "
              f"{float(times[f'{tag}_kl_{sfx}']):.0f} | {ptime(f'{tag}_passkey_{sfx}')} |")
    print(f"\nperplexity/KL: {k0['n_tokens']} scored tokens in {k0['n_chunks']} chunks of {k0['n_ctx']}" +
          (f"; passkey: seed {orig['seed']}; prefill tok/s (original) " +
           ", ".join(f"{l['tokens']}: {l['prefill_tok_s']:.0f}" for l in orig["lengths"]) if orig else "") + "\n")
EOF
cat "$OUT/summary.md"
