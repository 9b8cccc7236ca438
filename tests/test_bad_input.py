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
        "--no-progress", "--data-dir", str(REPO_ROOT / "data")]  # fmt: skip (--data-dir last)


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
    (root / "empty.pt").write_bytes(b"")  # a write cut at its start
    (root / "tiny.pt").write_bytes(b"{}\n")  # under 4 bytes: was "refused to load: ... possibly code"
    (root / "notes").mkdir()
    (root / "notes" / "mine.txt").write_text("not a run")
    x = np.full((20, 4, 4), 0.5, dtype=np.float32)
    np.savez(root / "no_y_test.npz", x=x, y=np.arange(20) % 2, x_test=x[:5])
    np.savez(root / "rgb.npz", x=np.full((20, 3, 4, 4), 0.5, dtype=np.float32))
    return root


CASES = {
    "existing run": (["train", "unsupervised", "--out", "{run}", *TINY], "already holds a run"),
    "resume, other shape": (["train", "unsupervised", "--out", "{run}", "--resume", "--z-dim", "3"],
                            "was made with --z-dim 2, not 3"),  # fmt: skip
    "resume, other model": (["train", "semi-supervised", "--out", "{run}", "--resume"],
                            "the run's model is unsupervised, not semi-supervised"),  # fmt: skip
    "zero epochs": (["train", "unsupervised", "--out", "{run}", "--resume", "--epochs", "0"],
                    "--epochs 0: must be positive"),  # fmt: skip
    "batch larger than the data": (["train", "unsupervised", "--out", "{new}", *TINY, "--batch-size", "101"],
                                   "--batch-size 101 is larger than the 100 training images"),  # fmt: skip
    "negative lr": (["train", "unsupervised", "--out", "{new}", *TINY, "--lr-recon", "-1"],
                    "--lr-recon -1.0: must be positive"),  # fmt: skip
    "NaN in .npz": (["train", "unsupervised", "--out", "{new}", *TINY[:-2], "--dataset", "{root}/nan.npz"],
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
    "empty checkpoint": (["sample", "{root}/empty.pt", "-n", "4", "--out", "{root}/x.png"],
                         "empty.pt: not a readable checkpoint (truncated or corrupt?): 0 bytes"),  # fmt: skip
    "3-byte checkpoint": (["sample", "{root}/tiny.pt", "-n", "4", "--out", "{root}/x.png"],
                          "tiny.pt: not a readable checkpoint (truncated or corrupt?): 3 bytes"),  # fmt: skip
    "evaluate, no data": (["evaluate", "{run}", "--data-dir", "{root}/nowhere"],
                          "no train-images-idx3-ubyte.gz"),  # fmt: skip
    "overwrite, not a run": (["train", "unsupervised", "--out", "{root}/notes", "--overwrite", *TINY],
                             "notes is not empty and holds no run"),  # fmt: skip
    "empty --out": (["train", "unsupervised", "--out", "", "--overwrite", *TINY], "--out is empty"),
    "labels, unsupervised": (["train", "unsupervised", "--out", "{new}", *TINY, "--labels", "100"],
                             "--labels 100: the unsupervised model uses no labeled images"),  # fmt: skip
    "lr-sup, clustering": (["train", "clustering", "--out", "{new}", *TINY, "--lr-sup", "0.5"],
                           "--lr-sup 0.5: the clustering model has no supervised phase"),  # fmt: skip
    "too many condition labels": (["train", "unsupervised", "--out", "{new}", *TINY, "--prior", "mixture",
                                   "--condition-labels", "700"],
                                  "--condition-labels 700: only 100 labeled training images exist"),  # fmt: skip
    ".npz, x_test unlabeled": (["train", "semi-supervised", "--out", "{new}", "--dataset",
                                "{root}/no_y_test.npz"], "no y_test labels x_test"),  # fmt: skip
    ".npz with --data-dir": (["train", "unsupervised", "--out", "{new}", *TINY, "--dataset", "{root}/no_y_test.npz"],
                             "no_y_test.npz is read from its own path, not from a data folder"),
    "bench, .npz with --data-dir": (["bench", "parzen", "--out", "{new}", "--dataset", "{root}/no_y_test.npz",
                                     "--data-dir", "{root}"], "is read from its own path"),
    "classifier, .npz with --data-dir": (["classifier", "train", "--dataset", "{root}/no_y_test.npz", "--data-dir",
                                          "{root}", "--cache-dir", "{root}/cache"], "is read from its own path"),
    ".npz, colour images": (["train", "unsupervised", "--out", "{new}", "--dataset", "{root}/rgb.npz"],
                            "expected grayscale images"),  # fmt: skip
    "parzen option alone": (["evaluate", "{run}", "--samples", "5", "--seed", "1"],
                            "--samples, --seed: only with --parzen"),  # fmt: skip
    "evaluate a file": (["evaluate", "{run}/config.json"], "config.json: a file; give the run folder"),
    "sample a JSON file": (["sample", "{run}/config.json", "--out", "{root}/x.png"],
                           "not a checkpoint (not a file written by torch.save"),  # fmt: skip
    "sample, no such GPU": (["sample", "{run}", "--device", "cuda:99", "--out", "{root}/x.png"],
                            "--device cuda:99: "),  # fmt: skip
    "sample, bad device": (["sample", "{run}", "--device", "banana", "--out", "{root}/x.png"],
                           "--device 'banana': choose auto, cpu or cuda[:N]"),  # fmt: skip
    "sample, bad format": (["sample", "{run}", "--out", "{root}/x.xyz"], "give a file name ending in .png"),
    "sample, no suffix": (["sample", "{run}", "--out", "{root}/x"], "give a file name ending in .png"),
    "sample, a folder": (["sample", "{run}", "--out", "{root}/notes"], "a folder; give a file such as"),
    "sample, too many": (["sample", "{run}", "-n", "1000000", "--out", "{root}/x.png"],
                         "-n 1000000: must be in 1..10000"),  # fmt: skip
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


def test_overwrite_keeps_a_dataset_kept_in_the_run_folder(tmp_path, capsys):
    """`--overwrite` loaded the .npz, emptied the folder (the .npz with it), trained and exited 0:
    the data was gone and the new run could not be evaluated or resumed."""
    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    np.savez(run / "mydata.npz", x=rng.random((40, 4, 4), dtype=np.float32))
    args = ["--hidden", "8", "--disc-hidden", "8", "--epochs", "1", "--batch-size", "10", "--no-progress"]
    assert cli.main(["train", "unsupervised", "--dataset", str(run / "mydata.npz"), "--out", str(run), *args]) == 1
    assert "is not empty and holds no run" in capsys.readouterr().err  # a new run needs an empty folder
    (run / "config.json").write_text("{}")  # as if a run had been trained there before
    before = snapshot(run)
    argv = ["train", "unsupervised", "--dataset", str(run / "mydata.npz"), "--out", str(run), "--overwrite", *args]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"aae: error: --overwrite: {run} also holds files that a run does not write (mydata.npz); "
                   "move them out first, or give another --out"]  # fmt: skip
    assert snapshot(run) == before
