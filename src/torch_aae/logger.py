"""Key-value logging with sinks: the run folder's metrics.jsonl (rewritten atomically each epoch)
and TensorBoard when it is installed. Keys are namespaced: `loss/recon`, `acc/disc_real`,
`eval/test_recon_bce`, `time/epoch_seconds`."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_write_bytes
from .errors import AAEError


class RunLogger:
    """Writes the per-epoch history to RUN/metrics.jsonl and, if available, TensorBoard."""

    def __init__(self, folder: Path | None, tensorboard: bool = True):
        self.folder = folder
        self.tb = None
        self._writer = None  # TensorBoard's SummaryWriter class, when installed
        if folder is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None
            self._writer = SummaryWriter

    def write_epoch(self, history: list[dict], tensorboard: bool = True) -> None:
        """Persist the whole history (so a resumed run never duplicates lines); push the last
        epoch to TensorBoard (unless `tensorboard` is False)."""
        if self.folder is None:
            return
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
        atomic_write_bytes(self.folder / "metrics.jsonl", text.encode())
        if self._writer is not None and tensorboard and history:
            row = history[-1]
            if self.tb is None:  # opened at the first epoch written: a resumed run's writer
                # drops the events of the epochs the crashed run logged after its checkpoint
                self.tb = self._writer(str(self.folder / "tensorboard"), purge_step=row["epoch"])
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
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AAEError(f"{path}:{number}: unreadable ({e.msg}: column {e.colno}); `aae train ... --resume` "
                               "rewrites the file from the checkpoint") from None  # fmt: skip
    return rows
