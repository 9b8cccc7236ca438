#!/usr/bin/env bash
# The GPU checks (issues 4 and 7) in one bounded run, for a lent GPU machine:
#   bash benchmarks/gpu_check.sh            (from the repo root; writes into $OUT or ./gpu-out)
# 1. tests/test_cuda.py: no host sync in the step; the CUDA-graph replay trains as eager does.
# 2. `aae bench throughput` of the semi-supervised model: --cuda-graphs in bf16 and tf32; eager
#    fp16 (loss scaling) and bf16. With BASE_SRC=DIR (another build's src/, carried along) the
#    graphed bf16 and tf32 rows again with that build, on the same machine, for a comparison.
# 3. benchmarks/gpu_kernels.py: the kernels of one eager step (count, device time), per
#    precision (and with BASE_SRC's build).
#    Then benchmarks/gpu_adam.py: the four Adam updates, torch's fused kernel against a
#    compiled and a Triton update (the lead for a faster graphed step).
# 4. 500 epochs of the semi-supervised recipe on all 60,000 training images, timed, in the
#    precision that ran fastest in 2 (stopped cleanly by SIGTERM at E500_LIMIT seconds if slower:
#    its per-epoch times remain).
# 5. The 100-epoch, 100-label recipe of issue 4 (seed 10, validation on), in the time left of
#    TOTAL_LIMIT seconds (default 570) for the whole script.
# 6. Only with BENCH_LIMIT > 0: the 100-label bench (30 epochs, 5 seeds), as far as it allows.
# Each step is bounded by `timeout`: at most TOTAL_LIMIT in all (one device call of 600 s).
# DEV=cpu SMALL=1 runs the same commands, shrunk, on a CPU (a dry run of this script).
source "$(dirname "$0")/gpu_common.sh"
WORK=${WORK:-/tmp/gpu-check}
mkdir -p "$OUT" "$WORK"
rm -rf "$WORK"/*
LOG="$OUT/log.txt"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }

if [ "${SMALL:-0}" = 1 ]; then
    SUBSET="--subset 2000"; E500=3; BENCH_EPOCHS=2; BENCH_VAL=500; STEPS=20; SEEDS=2
    R100_EPOCHS=2; R100_STEP=1
    GRAPHS=""
else
    SUBSET=""; E500=500; BENCH_EPOCHS=30; BENCH_VAL=10000; STEPS=300; SEEDS=5
    R100_EPOCHS=100; R100_STEP=70
    GRAPHS="--cuda-graphs"
fi
RECIPE=(--labels 100 --input-noise 0.3 --lr-step 20 --precision bf16
        --label-rotate 25 --label-scale 0.15 --label-shift 3)

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nproc; } 2>&1 | tee -a "$LOG"

say "1. tests on the device"
timeout 120 python3 -m pytest -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -25 | tee "$OUT/pytest.txt" | tee -a "$LOG"
if ! grep -qE "[0-9]+ passed" "$OUT/pytest.txt" || grep -qiE "^(FAILED|ERROR).*graph" "$OUT/pytest.txt"; then
    say "the CUDA-graph tests did not pass: the timed runs below go without --cuda-graphs"
    GRAPHS=""
fi

say "2. throughput (semi-supervised, batch 100, z 10)"
throughput() {  # $1: PYTHONPATH's build; the rest: the bench's flags
    local src=$1; shift
    timeout 40 env PYTHONPATH="$src" python3 -m torch_aae bench throughput --model semi-supervised \
        --z-dim 10 --batch-size 100 --steps "$STEPS" --device "$DEV" "$@" 2>&1 | tee -a "$LOG" \
        | python3 -c "import json,sys; t=sys.stdin.read(); r=json.loads(t[t.index('{'):]); r['build']=sys.argv[1]; print(json.dumps(r))" "$src" \
        >> "$OUT/throughput.jsonl" || say "throughput $src $*: failed"
}
for args in "--precision bf16 --cuda-graphs" "--precision tf32 --cuda-graphs" "--precision fp16" \
            "--precision bf16"; do
    case "$args" in *cuda-graphs*|*tf32*|*fp16*) [ "$DEV" = cuda ] || continue;; esac  # GPUs only
    # shellcheck disable=SC2086  # the flags are split on purpose
    throughput "$PWD/src" $args
done
if [ -n "${BASE_SRC:-}" ] && [ "$DEV" = cuda ]; then
    for args in "--precision bf16 --cuda-graphs" "--precision tf32 --cuda-graphs"; do
        # shellcheck disable=SC2086
        throughput "$BASE_SRC" $args
    done
fi

say "3. kernels of one eager step"
PRECS=$([ "$DEV" = cuda ] && echo "bf16 tf32" || echo "bf16")
for src in "$PWD/src" ${BASE_SRC:+"$BASE_SRC"}; do
    # shellcheck disable=SC2086
    timeout 60 env PYTHONPATH="$src" python3 benchmarks/gpu_kernels.py --device "$DEV" --precision $PRECS \
        2>>"$LOG" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line); r['build'] = sys.argv[1]; print(json.dumps(r))
    print(sys.argv[1], r['precision'], r['kernels'], 'kernels', r['microseconds'], 'us', 'gemm', r['gemm_microseconds'], 'us', file=sys.stderr)
" "$src" >> "$OUT/kernels.jsonl" 2> >(tee -a "$LOG" >&2) || say "kernels $src: failed"
done

say "3b. the Adam updates: fused, compiled, Triton"
ADAM_ARGS=$([ "$DEV" = cuda ] && echo "" || echo "--variants fused --hidden 64")
# shellcheck disable=SC2086
timeout 150 python3 benchmarks/gpu_adam.py --device "$DEV" $ADAM_ARGS 2>>"$LOG" | tee "$OUT/adam.jsonl" | tee -a "$LOG" \
    || say "gpu_adam: failed"

# The timed run takes the precision that ran fastest in 2 (the recipe's is bf16).
PREC=$(python3 -c '
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["build"] == sys.argv[3]]  # this build
rows = [r for r in rows if r["cuda_graphs"] == (sys.argv[2] == "1")] or rows
print(max(rows, key=lambda r: r["images_per_second"])["precision"] if rows else "bf16")
' "$OUT/throughput.jsonl" "${GRAPHS:+1}" "$PWD/src" 2>/dev/null || echo bf16)
say "4. $E500 epochs x 60,000 images, ${GRAPHS:-eager}, $PREC"
start=$(date +%s.%N)
timeout --signal=TERM --kill-after=20 "${E500_LIMIT:-300}" python3 -m torch_aae train semi-supervised \
    "${RECIPE[@]}" --precision "$PREC" $SUBSET --val-size 0 --epochs "$E500" --device "$DEV" $GRAPHS \
    --checkpoint-epochs 100 --no-progress --out "$WORK/e500" > "$WORK/e500.log" 2>&1
rc=$?
end=$(date +%s.%N)
python3 benchmarks/run_timing.py "$WORK/e500" "$start" "$end" "$rc" 2>&1 | tee -a "$LOG"
tail -5 "$WORK/e500.log" | tee -a "$LOG"
cp "$WORK/e500/metrics.jsonl" "$OUT/e500_metrics.jsonl" 2>/dev/null
cp "$WORK/e500/summary.json" "$OUT/e500_summary.json" 2>/dev/null

# 5. The 100-epoch recipe of issue 4 (one seed, validation on), in what is left of TOTAL_LIMIT:
# its GPU minutes, and its test error with the graphed step.
left=$(( ${TOTAL_LIMIT:-570} - SECONDS - 15 ))
if [ "$left" -gt 45 ]; then
    say "5. 100-label recipe, $R100_EPOCHS epochs, seed 10, ${GRAPHS:-eager}, $PREC (${left} s left)"
    timeout --signal=TERM --kill-after=10 "$left" python3 -m torch_aae train semi-supervised \
        "${RECIPE[@]}" --precision "$PREC" $SUBSET --val-size "$BENCH_VAL" --epochs "$R100_EPOCHS" \
        --lr-step "$R100_STEP" --seed 10 --device "$DEV" $GRAPHS --checkpoint-epochs 1000 --no-progress \
        --out "$WORK/r100" > "$WORK/r100.log" 2>&1
    say "r100 rc $?"
    tail -3 "$WORK/r100.log" | cut -c1-400 | tee -a "$LOG"
    cp "$WORK/r100/metrics.jsonl" "$OUT/r100_metrics.jsonl" 2>/dev/null
    cp "$WORK/r100/summary.json" "$OUT/r100_summary.json" 2>/dev/null
else
    say "5. skipped: ${left} s left"
fi

if [ "${BENCH_LIMIT:-0}" -gt 0 ]; then
    say "6. bench: 100 labels, $BENCH_EPOCHS epochs, $SEEDS seeds, ${GRAPHS:-eager}"
    timeout --signal=TERM --kill-after=20 "$BENCH_LIMIT" python3 -m torch_aae bench semi-supervised \
        "${RECIPE[@]}" $SUBSET --val-size "$BENCH_VAL" --epochs "$BENCH_EPOCHS" --device "$DEV" $GRAPHS \
        --checkpoint-epochs 10 --seeds "$SEEDS" --no-progress --out "$WORK/bench" > "$WORK/bench.log" 2>&1
    say "bench rc $?"
    tail -12 "$WORK/bench.log" | tee -a "$LOG"
    cp "$WORK/bench/bench.json" "$WORK/bench/bench.md" "$OUT/" 2>/dev/null
    for s in "$WORK"/bench/seed-*/summary.json; do
        [ -f "$s" ] && echo "$s $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['test_error'], d['train_seconds'])" "$s")"
    done | tee -a "$LOG"
fi
say "done"
