#!/usr/bin/env bash
# Probes of the semi-supervised recipe (100 labels, seed 0) on a lent GPU, one after another
# until SWEEP_LIMIT seconds have passed, then a table of their test errors; with --cuda-graphs a
# 30-epoch run takes well under a minute on an H200, so one call can try a dozen changes that
# take 10 to 40 minutes each on the 2-core CPU.
#   bash benchmarks/gpu_sweep.sh          (from the repo root; writes into $OUT or ./gpu-out)
# Each line of PROBES is the flags added to the base recipe (the first bench command of the
# README's semi-supervised section); edit the list for the question at hand.
source "$(dirname "$0")/gpu_common.sh"
WORK=${WORK:-/tmp/gpu-sweep}
LIMIT=${SWEEP_LIMIT:-420}
mkdir -p "$OUT" "$WORK"
BASE=(--labels 100 --input-noise 0.3 --val-size 10000 --precision bf16 --label-rotate 25
      --label-scale 0.15 --label-shift 3 --checkpoint-epochs 1000 --no-progress)
GRAPHS=$([ "$DEV" = cuda ] && echo --cuda-graphs)
PROBES=${PROBES:-"--epochs 30 --lr-step 20
--epochs 60 --lr-step 40
--epochs 100 --lr-step 70
--epochs 30 --lr-step 20 --label-rotate 30 --label-scale 0.2 --label-shift 4
--epochs 30 --lr-step 20 --lr-sup 3e-3
--epochs 30 --lr-step 20 --dropout 0.5
--epochs 30 --lr-step 20 --input-noise 0.5
--epochs 30 --lr-step 20 --z-dim 5
--epochs 30 --lr-step 20 --z-dim 20
--epochs 30 --lr-step 20 --cat-noise 0.1
--epochs 30 --lr-step 20 --hidden 2000 --disc-hidden 2000
--epochs 30 --lr-step 20 --batch-size 50"}
start=$(date +%s)
i=0
while IFS= read -r probe; do
    [ -n "$probe" ] || continue
    left=$(( LIMIT - ($(date +%s) - start) ))
    [ "$left" -gt 20 ] || { echo "time is up before: $probe"; break; }
    i=$((i + 1))
    echo "== probe $i: $probe (${left} s left)"
    # shellcheck disable=SC2086  # the probe's flags are split on purpose
    timeout --signal=TERM --kill-after=10 "$left" python3 -m torch_aae train semi-supervised \
        "${BASE[@]}" $probe --device "$DEV" $GRAPHS --out "$WORK/p$i" > "$WORK/p$i.log" 2>&1
    echo "$probe" > "$WORK/p$i/probe.txt" 2>/dev/null
    tail -2 "$WORK/p$i.log"
done <<< "$PROBES"
python3 - "$WORK" <<'EOF' | tee "$OUT/sweep.md"
import json, sys
from pathlib import Path
print("| probe | epochs | last val error (%) | test error (%) | train s |")
print("|---|---|---|---|---|")
for run in sorted(Path(sys.argv[1]).glob("p*/"), key=lambda p: int(p.name[1:])):
    probe = (run / "probe.txt").read_text().strip() if (run / "probe.txt").is_file() else "?"
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").is_file() else []
    s = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    val = f"{100 * rows[-1]['eval/val_error']:.2f}" if rows else "-"
    test = f"{100 * s['test_error']:.2f}" if "test_error" in s else "(unfinished)"
    print(f"| `{probe}` | {len(rows)} | {val} | {test} | {s.get('train_seconds', '-')} |")
EOF
