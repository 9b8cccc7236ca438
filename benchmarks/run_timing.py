"""The timing of a `--epochs 500` run on a lent GPU (gpu_500.sh, gpu_check.sh): the whole
command's wall time, the training seconds of the logged epochs, the median and slowest epoch
(the first left out: it holds the graph's capture and the kernels' compilation), the first and
last epochs' metrics and the summary.

    python3 benchmarks/run_timing.py RUN START END RC   (START/END: `date +%s.%N`; RC: the exit status)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run: Path, start: float, end: float, rc: str) -> None:
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    secs = [r["time/epoch_seconds"] for r in rows]
    print(f"rc {rc}; wall {end - start:.1f} s for the whole command (start-up, evaluation, plots included)")
    if secs:
        s = sorted(secs[1:] or secs)
        median = s[len(s) // 2]
        print(f"{len(rows)} epochs logged; training seconds {sum(secs):.1f} (first epoch {secs[0]:.3f}); median "
              f"epoch {median:.3f} s -> 500 epochs ~ {500 * median / 60:.2f} min; slowest {s[-1]:.3f} s")
        print("epoch 1:", json.dumps(rows[0]))
        print("last epoch:", json.dumps(rows[-1]))
    summary = run / "summary.json"
    if summary.is_file():
        print("summary:", summary.read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
