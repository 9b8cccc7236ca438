"""Shared fixtures: the real MNIST files (loaded once), tiny models and datasets, IDX builders.

The suite must stay fast on a small, busy machine: every model here is tiny (hidden 32..64,
z_dim 2), every training run uses a few hundred images, and torch runs on one thread (with two
shared cores, more intra-op threads make tiny models ~100x slower through oversubscription).
Subprocesses inherit the same limit through OMP_NUM_THREADS.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from torch_aae.config import TrainConfig  # noqa: E402
from torch_aae.data import MNIST_FILES, Dataset, load_dataset  # noqa: E402
from torch_aae.unsupervised import UnsupervisedAAE  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO_ROOT / "data" / "mnist"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# Real MNIST


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The real MNIST, read once per session through the library's own IDX reader.

    Treat as read-only: tests that need to change a dataset build their own (see `subset_of`).
    """
    missing = [f for f, _ in MNIST_FILES.values() if not (MNIST_DIR / f).is_file()]
    assert not missing, f"the MNIST files must be in {MNIST_DIR}: missing {missing}"
    return load_dataset("mnist", data_dir=REPO_ROOT / "data")


def subset_of(data: Dataset, n_train: int, n_test: int | None = None) -> Dataset:
    """A fresh Dataset holding copies of the first n_train / n_test images of `data`."""
    n_test = n_train if n_test is None else n_test
    return Dataset(
        name=data.name,
        train_x=data.train_x[:n_train].clone(),
        train_y=data.train_y[:n_train].clone(),
        test_x=data.test_x[:n_test].clone(),
        test_y=data.test_y[:n_test].clone(),
        image_shape=data.image_shape,
        num_classes=data.num_classes,
    )


@pytest.fixture
def small_mnist(mnist) -> Dataset:
    """500 real training images and 500 real test images."""
    return subset_of(mnist, 500, 500)


# ----------------------------------------------------------------------------------------------
# Tiny models and configs


def tiny_model(seed: int = 0, in_dim: int = 784, image_shape=(28, 28), **kw) -> UnsupervisedAAE:
    """A small UnsupervisedAAE whose weights depend only on `seed`."""
    args = dict(z_dim=2, hidden=32, depth=2, disc_hidden=32, disc_depth=2, dropout=0.0)
    args.update(kw)
    torch.manual_seed(seed)
    return UnsupervisedAAE(in_dim, image_shape, **args)


def tiny_train(**kw) -> TrainConfig:
    """A CPU TrainConfig with fixed, fast-learning rates (independent of the library defaults)."""
    args = dict(epochs=1, batch_size=50, device="cpu", seed=0, log_every=1000,
                lr_recon=1e-3, lr_reg=2e-4, beta1_reg=0.5)  # fmt: skip
    args.update(kw)
    return TrainConfig(**args)


def synthetic_dataset(n: int = 60, shape=(4, 4), classes: int = 3, test: int | None = None,
                      seed: int = 0) -> Dataset:  # fmt: skip
    """Random images in [0, 1] of `shape`, labels i % classes; optional test split."""
    g = torch.Generator().manual_seed(seed)
    feats = int(np.prod(shape))
    x = torch.rand(n, feats, generator=g)
    y = torch.arange(n) % classes
    tx = None if test is None else torch.rand(test, feats, generator=g)
    ty = None if test is None else torch.arange(test) % classes
    return Dataset("synthetic", x, y, tx, ty, tuple(shape), classes)


# ----------------------------------------------------------------------------------------------
# IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    """The bytes of an unsigned-byte IDX file holding `array` (1 or 3 dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_fake_mnist(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 0,
                     n_train_labels: int | None = None, max_label: int = 9) -> dict:  # fmt: skip
    """Write four small gzipped IDX files named like MNIST's into `folder`.

    Returns a files dict like data.MNIST_FILES, with the md5 sums of the IDX bytes written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train_labels = n_train if n_train_labels is None else n_train_labels
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train_labels) % (max_label + 1)).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    files = {}
    for key, (fname, _) in MNIST_FILES.items():
        path = folder / fname
        raw = idx_bytes(arrays[key])
        path.write_bytes(gzip.compress(raw, mtime=0))
        files[key] = (fname, hashlib.md5(raw).hexdigest())
    return files


# ----------------------------------------------------------------------------------------------
# Subprocesses


def run_cli(*args: str, timeout: float = 120, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python -m torch_aae ARGS` from the repo root (so ./data finds MNIST)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("TORCH_AAE_DATA", None)
    return subprocess.run(
        [sys.executable, "-m", "torch_aae", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed CLI call: non-zero exit, one `aae: error:` line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aae: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
