#!/usr/bin/env bash
# Issue 7's GPU point: 500 epochs of the semi-supervised recipe (60,000 images per epoch,
# graphed, tf32), timed, with the step's faster options. In two bounded parts (two device calls):
#   PART=measure bash benchmarks/gpu_500.sh
#       `aae bench throughput` of the graphed step (z-dim 10, batch 100): torch's fused Adam vs
#       `--adam-kernel triton`, each without and with `--paired-discriminators`, in tf32 (and the
#       fastest pair in bf16); benchmarks/gpu_adam.py (the four updates alone); then the CUDA
#       tests of those options (tests/test_cuda.py -k "triton or True").
#   PART=run FAST="--adam-kernel triton --paired-discriminators" bash benchmarks/gpu_500.sh
#       the 500 epochs with FAST's flags, stopped by SIGTERM at E500_LIMIT seconds (default 330)
#       if slower (its per-epoch times remain); then all of tests/test_cuda.py in what is left of
#       TOTAL_LIMIT (default 560) seconds.
# Writes into $OUT (default ./gpu-out): log.txt, throughput.jsonl, adam.jsonl, e500_*, pytest.txt.
# DEV=cpu SMALL=1 runs the same commands, shrunk, on a CPU (a dry run, Triton's interpreter).
source "$(dirname "$0")/gpu_common.sh"
WORK=${WORK:-/tmp/gpu-500}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
if [ "${SMALL:-0}" = 1 ]; then
    E500=2; SUBSET="--subset 1000"; STEPS=3; GRAPHS=""; PREC=fp32; PREC2=bf16; HIDDEN="--hidden 64"
    export TRITON_INTERPRET=1
else
    E500=500; SUBSET=""; STEPS=300; GRAPHS="--cuda-graphs"; PREC=tf32; PREC2=bf16; HIDDEN=""
fi

say "machine ($PART)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nproc; } 2>&1 | tee -a "$LOG"

throughput() {  # the bench's extra flags
    # shellcheck disable=SC2086  # the flags are split on purpose
    timeout 60 python3 -m torch_aae bench throughput --model semi-supervised --z-dim 10 --batch-size 100 \
        --steps "$STEPS" --device "$DEV" $GRAPHS "$@" > "$WORK/tp.json" 2>> "$LOG"
    echo "rc $? for: $*" >> "$LOG"
    python3 -c "import json,sys; t=open(sys.argv[1]).read(); r=json.loads(t[t.index('{'):])
print(json.dumps({k: r[k] for k in ('device', 'precision', 'cuda_graphs', 'adam_kernel', 'paired_discriminators',
      'images_per_second', 'model_gflops', 'matmul_gflops', 'fraction_of_peak', 'torch')}))" \
        "$WORK/tp.json" 2>/dev/null | tee -a "$OUT/throughput.jsonl" | tee -a "$LOG" || say "throughput $*: failed"
}

if [ "${PART:-}" = measure ]; then
    say "1. throughput: graphed $PREC step, batch 100"
    for kernel in torch triton; do
        for paired in "" --paired-discriminators; do
            throughput --precision "$PREC" --adam-kernel "$kernel" $paired
        done
    done
    throughput --precision "$PREC2" --adam-kernel triton --paired-discriminators
    say "2. the four Adam updates alone"
    # shellcheck disable=SC2086
    timeout 60 python3 benchmarks/gpu_adam.py --device "$DEV" --variants fused triton $HIDDEN 2>>"$LOG" \
        | tee "$OUT/adam.jsonl" | tee -a "$LOG"
    left=$(( ${TOTAL_LIMIT:-300} - SECONDS - 10 ))
    if [ "$left" -gt 20 ]; then
        say "3. CUDA tests of the options (${left} s left)"
        timeout "$left" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "triton or True" 2>&1 \
            | tail -30 > "$OUT/pytest.txt"
        tail -30 "$OUT/pytest.txt" | tee -a "$LOG"
    else
        say "3. tests skipped: ${left} s left"
    fi
elif [ "${PART:-}" = run ]; then
    say "1. $E500 epochs x 60,000 images, ${GRAPHS:-eager}, $PREC, ${FAST:-(no options)}"
    rm -rf "$WORK/e500"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout --signal=TERM --kill-after=20 "${E500_LIMIT:-330}" python3 -m torch_aae train semi-supervised \
        --labels 100 --input-noise 0.3 --lr-step 20 --label-rotate 25 --label-scale 0.15 --label-shift 3 \
        --precision "$PREC" $SUBSET --val-size 0 --epochs "$E500" --device "$DEV" $GRAPHS ${FAST:-} \
        --checkpoint-epochs 100 --no-progress --out "$WORK/e500" > "$WORK/e500.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    python3 benchmarks/run_timing.py "$WORK/e500" "$start" "$end" "$rc" 2>&1 | tee -a "$LOG"
    tail -4 "$WORK/e500.log" | cut -c1-600 | tee -a "$LOG"
    cp "$WORK/e500/metrics.jsonl" "$OUT/e500_metrics.jsonl" 2>/dev/null
    cp "$WORK/e500/summary.json" "$OUT/e500_summary.json" 2>/dev/null
    cp "$WORK/e500.log" "$OUT/e500.log" 2>/dev/null
    left=$(( ${TOTAL_LIMIT:-560} - SECONDS - 10 ))
    if [ "$left" -gt 30 ]; then
        say "2. tests/test_cuda.py (${left} s left)"
        timeout "$left" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -30 > "$OUT/pytest.txt"
        tail -30 "$OUT/pytest.txt" | tee -a "$LOG"
    else
        say "2. tests skipped: ${left} s left"
    fi
else
    echo "PART=measure or PART=run (see the top of $0)" >&2
    exit 2
fi
say "done"
