"""Key-value logging with sinks: the run folder's metrics.jsonl (rewritten atomically each epoch)
and TensorBoard when it is installed. Keys are namespaced: `loss/recon`, `acc/disc_real`,
`eval/test_recon_bce`, `time/epoch_seconds`."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_write_bytes


class RunLogger:
    """Writes the per-epoch history to RUN/metrics.jsonl and, if available, TensorBoard."""

    def __init__(self, folder: Path | None, tensorboard: bool = True):
        self.folder = folder
        self.tb = None
        if folder is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(folder / "tensorboard"))

    def write_epoch(self, history: list[dict]) -> None:
        """Persist the whole history (so a resumed run never duplicates lines); push the last
        epoch to TensorBoard."""
        if self.folder is None:
            return
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
        atomic_write_bytes(self.folder / "metrics.jsonl", text.encode())
        if self.tb is not None and history:
            row = history[-1]
            for key, value in row.items():
                if "/" in key:
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_history(folder: Path) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
