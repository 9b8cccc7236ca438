#!/usr/bin/env bash
# The 100-epoch, 100-label recipe of issue 4 on a lent GPU, graphed, one seed after another
# until LIMIT seconds have passed (a seed cut short leaves no summary and is not counted):
#   SEEDS="14 11 12 13" LIMIT=270 PREC=tf32 bash benchmarks/gpu_seeds.sh
# EXTRA adds flags to the recipe, e.g. EXTRA="--label-elastic 34" (the elastic recipe).
# AUG replaces the labeled images' augmentation (default "--label-rotate 25 --label-scale 0.15
# --label-shift 3"); AUG= (empty) runs the permutation-invariant recipe, e.g. for 500 epochs:
#   AUG= EPOCHS=500 STEP=350 SEEDS=10 LIMIT=420 bash benchmarks/gpu_seeds.sh
# Writes $OUT/seed-N_summary.json per seed (at most 7 seeds come back) and a line per seed to log.txt.
source "$(dirname "$0")/gpu_common.sh"
WORK=${WORK:-/tmp/gpu-seeds}
LIMIT=${LIMIT:-270}
mkdir -p "$OUT" "$WORK"
GRAPHS=$([ "$DEV" = cuda ] && echo --cuda-graphs)
EPOCHS=${EPOCHS:-100}
STEP=${STEP:-70}
AUG=${AUG---label-rotate 25 --label-scale 0.15 --label-shift 3}
for seed in ${SEEDS:-10 11 12 13 14}; do
    left=$(( LIMIT - SECONDS ))
    [ "$left" -gt 30 ] || { echo "== seed $seed: not started, ${left} s left" | tee -a "$OUT/log.txt"; continue; }
    echo "== $(date +%T) seed $seed (${left} s left)" | tee -a "$OUT/log.txt"
    # shellcheck disable=SC2086  # AUG, EXTRA, SUBSET and GRAPHS are split on purpose
    timeout --signal=TERM --kill-after=10 "$left" python3 -m torch_aae train semi-supervised \
        --labels 100 --input-noise 0.3 --val-size 10000 --epochs "$EPOCHS" --lr-step "$STEP" \
        --precision "${PREC:-tf32}" $AUG \
        --seed "$seed" ${EXTRA:-} ${SUBSET:-} --device "$DEV" $GRAPHS --checkpoint-epochs 1000 --no-progress \
        --out "$WORK/seed-$seed" > "$WORK/seed-$seed.log" 2>&1
    echo "rc $?: $(tail -1 "$WORK/seed-$seed.log" | cut -c1-200)" | tee -a "$OUT/log.txt"
    if cp "$WORK/seed-$seed/summary.json" "$OUT/seed-${seed}_summary.json" 2>/dev/null; then
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('seed', sys.argv[2], 'test_error', d['test_error'], 'train_seconds', d['train_seconds'])" \
            "$OUT/seed-${seed}_summary.json" "$seed" | tee -a "$OUT/log.txt"
    fi
done
