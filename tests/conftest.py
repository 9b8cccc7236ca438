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
# Without a GPU, Triton's kernels (`--adam-kernel triton`) run under its interpreter, in numpy:
# read when torch_aae.triton_adam is first imported, so set before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from torch_aae import losses  # noqa: E402
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


def tiny_semi(seed: int = 0, **kw):
    """A tiny semi-supervised AAE for MNIST's shapes (z_dim 2, hidden 32, dropout 0.2 unless
    given)."""
    from torch_aae.semi_supervised import SemiSupervisedAAE

    args = dict(z_dim=2, hidden=32, depth=2, disc_hidden=32, disc_depth=2, dropout=0.2)
    args.update(kw)
    torch.manual_seed(seed)
    return SemiSupervisedAAE(784, (28, 28), 10, **args)


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
# The adversarial phases of the models with a categorical code (semi-supervised, clustering)


class AdversarialRecorder:
    """One step's discriminator and generator phases, seen through hooks, and the same phases
    recomputed by hand from `losses` at the weights of that moment: the discriminators' (and
    the logged) losses and accuracies at the "disc" optimizer's step, d(generator loss)/d(encoder)
    at the "gen" optimizer's step. Needs a step without noise and without dropout, so that
    the encoder's codes of x are a function of x and its weights."""

    def __init__(self, model, optimizers, x):
        self.model, self.x, self.on = model, x, True
        self.codes, self.cat, self.gauss = [], [], []  # per pass: encoder outputs, (input, output)
        model.encoder.register_forward_hook(self._hook(self.codes, lambda a, out: tuple(t.detach() for t in out)))
        model.label_discriminator.register_forward_hook(self._hook(self.cat, lambda a, out: (a[0].detach(), out.detach())))
        model.latent_discriminator.register_forward_hook(self._hook(self.gauss, lambda a, out: (a[0].detach(), out.detach())))
        optimizers["disc"].register_step_pre_hook(lambda o, a, k: self._disc())
        optimizers["gen"].register_step_pre_hook(lambda o, a, k: self._gen())

    def _hook(self, into, what):
        return lambda m, a, out: into.append(what(a, out)) if self.on else None

    def _disc(self):
        m, n = self.model, len(self.x)
        (y_in, _), (z_in, _) = self.cat[0], self.gauss[0]
        logits, z = self.codes[1]  # the discriminator phase's encoder pass
        # Each discriminator's one pass: the prior's draws first, then the encoder's codes.
        assert torch.all((y_in[:n] == 0) | (y_in[:n] == 1)) and torch.all(y_in[:n].sum(1) == 1)
        assert torch.equal(y_in[n:], logits.softmax(1)) and torch.equal(z_in[n:], z)
        params = [*m.label_discriminator.parameters(), *m.latent_discriminator.parameters()]
        self.on = False
        cat, gauss = m.label_discriminator(y_in), m.latent_discriminator(z_in)
        self.on = True
        self.disc_cat = losses.discriminator_loss(cat[:n], cat[n:])  # prior = real, codes = fake
        self.disc_gauss = losses.discriminator_loss(gauss[:n], gauss[n:])
        self.expected_disc_grads = torch.autograd.grad(self.disc_cat + self.disc_gauss, params)
        self.disc_grads = [p.grad.clone() for p in params]
        self.acc = {"acc/disc_cat_real": (cat[:n] > 0).float().mean().item(),
                    "acc/disc_cat_fake": (cat[n:] < 0).float().mean().item(),
                    "acc/disc_gauss_real": (gauss[:n] > 0).float().mean().item(),
                    "acc/disc_gauss_fake": (gauss[n:] < 0).float().mean().item()}  # fmt: skip

    def _gen(self):
        m = self.model
        params = list(m.encoder.parameters())
        self.on = False
        logits, z = m.encoder(self.x)
        self.gen = (losses.generator_loss(m.label_discriminator(logits.softmax(1)))
                    + losses.generator_loss(m.latent_discriminator(z)))  # fmt: skip
        self.on = True
        self.expected_gen_grads = torch.autograd.grad(self.gen, params)
        self.gen_grads = [p.grad.clone() for p in params]


def assert_adversarial_phases_match_the_hand_computation(rec, logs):
    assert logs["loss/disc_cat"].item() == pytest.approx(rec.disc_cat.item(), rel=1e-5)
    assert logs["loss/disc_gauss"].item() == pytest.approx(rec.disc_gauss.item(), rel=1e-5)
    for got, expected in zip(rec.disc_grads, rec.expected_disc_grads):
        assert torch.allclose(got, expected, atol=1e-7)
    assert logs["loss/gen"].item() == pytest.approx(rec.gen.item(), rel=1e-5)
    for got, expected in zip(rec.gen_grads, rec.expected_gen_grads):
        assert torch.allclose(got, expected, atol=1e-7)
    # The logged accuracies are the discriminators' on this step's pass; each real and fake
    # differ here, so that one logged in the other's place shows.
    assert {k: logs[k].item() for k in rec.acc} == rec.acc
    assert rec.acc["acc/disc_cat_real"] != rec.acc["acc/disc_cat_fake"]
    assert rec.acc["acc/disc_gauss_real"] != rec.acc["acc/disc_gauss_fake"]


def assert_cat_noise_in_both_phases(model, run_step, n: int, std: float) -> None:
    """--cat-noise std: the label discriminator reads one-hot draws + N(0, std^2) and softmax(y) +
    N(0, std^2), in the discriminator phase and (fresh noise) in the generator's. `run_step()`
    trains one step on n images; std well below 0.5, so that rounding recovers the one-hots."""
    codes, judged = [], []
    model.encoder.register_forward_hook(lambda m, a, out: codes.append(out[0].detach()))
    model.label_discriminator.register_forward_hook(lambda m, a, out: judged.append(a[0].detach()))
    torch.manual_seed(0)
    run_step()
    (both, gen_phase), y_fake = judged, codes[1].softmax(1)  # phases 2 and 3 read the second pass
    prior = both[:n].round()  # the one-hot draws
    assert torch.all(prior.sum(1) == 1) and torch.all((prior == 0) | (prior == 1))
    for noise in (both[:n] - prior, both[n:] - y_fake, gen_phase - y_fake):
        assert noise.std().item() == pytest.approx(std, rel=0.1) and abs(noise.mean().item()) < 0.1 * std
    assert not torch.allclose(gen_phase, both[n:])


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
