"""Bad input through the real CLI: one `aae: error:` line, exit status 1, and every existing file
left exactly as it was (nothing written, nothing removed, no half-made run folder)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from torch_aae import cli

TINY = ["--hidden", "32", "--disc-hidden", "32", "--subset", "100", "--epochs", "1",
        "--no-progress", "--data-dir", str(REPO_ROOT / "data")]  # fmt: skip


def snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


class Evil:
    """Unpickling this would create the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    assert cli.main(["train", "unsupervised", "--out", str(root / "run"), *TINY]) == 0
    np.savez(root / "nan.npz", x=np.full((5, 2, 2), np.nan))
    torch.save({"format_version": 1, "x": Evil(root / "PWNED")}, root / "evil.pt")
    (root / "cut.pt").write_bytes((root / "run" / "checkpoints" / "latest.pt").read_bytes()[:5000])
    return root


CASES = {
    "existing run": (["train", "unsupervised", "--out", "{run}", *TINY], "already holds a run"),
    "resume, other shape": (["train", "unsupervised", "--out", "{run}", "--resume", "--z-dim", "3"],
                            "was made with --z-dim 2, not 3"),  # fmt: skip
    "resume, other model": (["train", "semi-supervised", "--out", "{run}", "--resume"],
                            "is a unsupervised model"),  # fmt: skip
    "zero epochs": (["train", "unsupervised", "--out", "{run}", "--resume", "--epochs", "0"],
                    "--epochs 0: must be positive"),  # fmt: skip
    "negative lr": (["train", "unsupervised", "--out", "{new}", *TINY, "--lr-recon", "-1"],
                    "--lr-recon -1.0: must be positive"),  # fmt: skip
    "NaN in .npz": (["train", "unsupervised", "--out", "{new}", *TINY, "--dataset", "{root}/nan.npz"],
                    "contains NaN"),  # fmt: skip
    "too many labels": (["train", "semi-supervised", "--out", "{new}", *TINY, "--labels", "500"],
                        "--labels 500: only 100 labeled"),  # fmt: skip
    "labels not divisible": (["train", "semi-supervised", "--out", "{new}", *TINY, "--labels", "15"],
                             "divisible by the 10 classes"),  # fmt: skip
    "unknown dataset": (["train", "unsupervised", "--out", "{new}", "--dataset", "cifar"],
                        "unknown dataset 'cifar'"),  # fmt: skip
    "missing data": (["train", "unsupervised", "--out", "{new}", "--data-dir", "{root}/nowhere"],
                     "no train-images-idx3-ubyte.gz"),  # fmt: skip
    "pickled payload": (["sample", "{root}/evil.pt", "-n", "4", "--out", "{root}/x.png"],
                        "refused to load"),  # fmt: skip
    "truncated checkpoint": (["sample", "{root}/cut.pt", "-n", "4", "--out", "{root}/x.png"],
                             "not a readable checkpoint"),  # fmt: skip
    "evaluate, no data": (["evaluate", "{run}", "--data-dir", "{root}/nowhere"],
                          "no train-images-idx3-ubyte.gz"),  # fmt: skip
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_changes_nothing(case, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    argv, fragment = CASES[case]
    names = {"run": workdir / "run", "new": workdir / "new", "root": workdir}
    argv = [a.format(**names) for a in argv]
    before = snapshot(workdir)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aae: error:"), err
    assert fragment in err[0], err[0]
    assert snapshot(workdir) == before  # nothing written, changed or removed
    assert not (workdir / "new").exists() and not (workdir / "PWNED").exists()
    assert not os.path.exists(workdir / "x.png")
