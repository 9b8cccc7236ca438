"""Datasets: the IDX reader (real and corrupt files), lookup order, download, .npz, splits."""

from __future__ import annotations

import gzip
import hashlib
import io
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, idx_bytes, md5_of, synthetic_dataset, write_fake_mnist
from torch_aae import data as D
from torch_aae import download as DL
from torch_aae.errors import AAEError

# ----------------------------------------------------------------------------------------------
# The real MNIST files


def test_real_mnist_shapes_dtypes_and_ranges(mnist):
    assert mnist.name == "mnist"
    assert mnist.train_x.shape == (60000, 784)
    assert mnist.test_x.shape == (10000, 784)
    assert mnist.train_y.shape == (60000,)
    assert mnist.test_y.shape == (10000,)
    assert mnist.image_shape == (28, 28)
    assert mnist.num_classes == 10 and mnist.features == 784
    for x in (mnist.train_x, mnist.test_x):
        assert x.dtype == torch.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    for y in (mnist.train_y, mnist.test_y):
        assert y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == list(range(10))
    assert mnist.val_x is None and mnist.val_y is None


def test_real_mnist_known_content(mnist):
    # Well-known facts about MNIST: the first training digit is a 5, the first test digit a 7,
    # and the training set holds 5923 zeros. Pixel values are multiples of 1/255.
    assert int(mnist.train_y[0]) == 5
    assert int(mnist.test_y[0]) == 7
    assert int((mnist.train_y == 0).sum()) == 5923
    scaled = mnist.test_x[:100] * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-3)
    split, x, y = mnist.eval_split()
    assert split == "test" and x is mnist.test_x and y is mnist.test_y


def test_read_idx_real_file_matches_dataset(mnist):
    labels = D.read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert labels.dtype == np.uint8 and labels.shape == (10000,)
    assert np.array_equal(labels, mnist.test_y.numpy())


def test_md5_of_real_files_matches_published():
    for fname, md5 in D.MNIST_FILES.values():
        assert hashlib.md5(D.read_idx_bytes(MNIST_DIR / fname)).hexdigest() == md5
        assert D.md5sum(MNIST_DIR / fname) == D.MNIST_GZ_MD5[fname]  # the .gz as published


# ----------------------------------------------------------------------------------------------
# parse_idx on synthetic bytes


@pytest.mark.parametrize("shape", [(5,), (3, 2, 4), (0,), (0, 28, 28)])
def test_parse_idx_round_trip(shape):
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    out = D.parse_idx(idx_bytes(array), ndim=len(shape))
    assert out.dtype == np.uint8 and out.shape == shape
    assert np.array_equal(out, array)


def _labels_raw() -> bytes:
    return idx_bytes(np.arange(10, dtype=np.uint8))


@pytest.mark.parametrize(
    "raw, ndim, message",
    [
        (b"\x00\x00\x08", 1, "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00", 1, "truncated IDX header"),
        (b"\x00\x00\x08\x03" + _labels_raw()[4:], 1, "bad magic number 0x00000803"),
        (_labels_raw(), 3, "bad magic number 0x00000801"),
        (b"\x00\x00\x0d\x01" + _labels_raw()[4:], 1, "bad magic"),  # float IDX, not unsigned byte
        (_labels_raw()[:-1], 1, "header says shape (10,)"),  # truncated data
        (_labels_raw() + b"\x00", 1, "but the file holds 11"),  # trailing bytes
        (b"\x00\x00\x08\x01" + (11).to_bytes(4, "big") + bytes(10), 1, "(11,)"),  # count mismatch
    ],
    ids=["header3", "header6", "magic-ndim3", "magic-ndim1", "magic-float", "truncated",
         "trailing", "count"],  # fmt: skip
)
def test_parse_idx_rejects_bad_bytes(raw, ndim, message):
    with pytest.raises(AAEError, match="labels.idx") as err:
        D.parse_idx(raw, ndim, source="labels.idx")
    assert message in str(err.value)


# ----------------------------------------------------------------------------------------------
# read_idx on corrupt files built from the real bytes


@pytest.fixture(scope="module")
def real_label_bytes() -> tuple[bytes, bytes]:
    """(gzipped, raw) bytes of the real MNIST test labels."""
    gz = (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()
    return gz, gzip.decompress(gz)


def _corrupt(kind: str, gz: bytes, raw: bytes) -> bytes:
    if kind == "bad-magic":
        return gzip.compress(b"\x00\x00\x08\x03" + raw[4:])
    if kind == "truncated-data":
        return gzip.compress(raw[:-100])
    if kind == "count-mismatch":
        return gzip.compress(raw[:4] + (10001).to_bytes(4, "big") + raw[8:])
    if kind == "truncated-gzip":
        return gz[: len(gz) // 2]
    if kind == "bad-gzip-crc":
        return gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:]
    if kind == "gzip-magic-then-garbage":
        return b"\x1f\x8b" + bytes(range(256)) * 4
    if kind == "garbage":
        return b"this is not an IDX file, nor gzip" * 10
    if kind == "empty":
        return b""
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("bad-magic", "bad magic number"),
        ("truncated-data", "header says shape (10000,)"),
        ("count-mismatch", "header says shape (10001,)"),
        ("truncated-gzip", "not a readable gzip IDX file"),
        ("bad-gzip-crc", "not a readable gzip IDX file"),
        ("gzip-magic-then-garbage", "not a readable gzip IDX file"),
        ("garbage", "bad magic number"),
        ("empty", "truncated IDX header"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, real_label_bytes, kind, message):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(_corrupt(kind, *real_label_bytes))
    with pytest.raises(AAEError) as err:
        D.read_idx(path, ndim=1)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_read_idx_accepts_uncompressed_file(tmp_path, real_label_bytes):
    path = tmp_path / "labels.idx"
    path.write_bytes(real_label_bytes[1])
    assert np.array_equal(D.read_idx(path, 1), D.read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", 1))


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(AAEError, match="not a readable gzip IDX file"):
        D.read_idx(tmp_path / "nope.gz", 1)


# ----------------------------------------------------------------------------------------------
# read_idx_dataset: md5 and consistency checks over the four files


def test_read_idx_dataset_on_small_fake_mnist(tmp_path):
    files = write_fake_mnist(tmp_path, n_train=12, n_test=6)
    data = D.read_idx_dataset(tmp_path, files, "fake")
    assert data.train_x.shape == (12, 784) and data.test_x.shape == (6, 784)
    assert data.train_y.tolist() == [i % 10 for i in range(12)]
    assert data.image_shape == (28, 28) and data.num_classes == 10


def test_image_label_count_mismatch(tmp_path):
    files = write_fake_mnist(tmp_path, n_train=12, n_train_labels=11)
    with pytest.raises(AAEError, match="train set has 12 images but 11 labels"):
        D.read_idx_dataset(tmp_path, files, "fake")


def test_labels_above_nine_are_refused(tmp_path):
    files = write_fake_mnist(tmp_path, n_train=12, max_label=11)
    with pytest.raises(AAEError, match="labels go up to 11"):
        D.read_idx_dataset(tmp_path, files, "fake")


def test_missing_file_in_dataset_folder(tmp_path):
    files = write_fake_mnist(tmp_path)
    (tmp_path / files["test_labels"][0]).unlink()
    with pytest.raises(AAEError, match="missing file .*t10k-labels"):
        D.read_idx_dataset(tmp_path, files, "fake")


def _regzip(path: Path, out: Path) -> None:
    """Write the same uncompressed content as `path`, gzipped with other settings."""
    out.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=1))


def _real_mnist_folder(tmp_path: Path) -> Path:
    """ROOT/mnist holding links to the real files; returns ROOT."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for fname, _ in D.MNIST_FILES.values():
        (folder / fname).symlink_to(MNIST_DIR / fname)
    return tmp_path


def test_a_regzipped_or_unpacked_real_file_is_accepted(tmp_path, mnist):
    root = _real_mnist_folder(tmp_path)
    regzipped = root / "mnist" / "train-labels-idx1-ubyte.gz"
    regzipped.unlink()
    _regzip(MNIST_DIR / regzipped.name, regzipped)
    assert D.md5sum(regzipped) != D.MNIST_GZ_MD5[regzipped.name]  # other gzip bytes, same content
    unpacked = root / "mnist" / "train-images-idx3-ubyte"  # unpacked: the name without .gz
    (root / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    unpacked.write_bytes(gzip.decompress((MNIST_DIR / "train-images-idx3-ubyte.gz").read_bytes()))
    data = D.load_dataset("mnist", data_dir=root)
    assert torch.equal(data.train_x, mnist.train_x) and torch.equal(data.train_y, mnist.train_y)
    assert torch.equal(data.test_x, mnist.test_x)


def test_an_unpacked_file_with_other_content_is_named_in_the_md5_error(tmp_path):
    root = _real_mnist_folder(tmp_path)
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    raw = bytearray(gzip.decompress((MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a valid label file: only the md5 can tell
    (root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(AAEError, match=r"mnist/t10k-labels-idx1-ubyte: md5 [0-9a-f]{32} of its IDX bytes does not match"):
        D.load_dataset("mnist", data_dir=root)


def test_a_missing_file_names_both_forms(tmp_path):
    root = _real_mnist_folder(tmp_path)
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(AAEError, match=r"missing file .*t10k-images-idx3-ubyte.gz \(or t10k-images-idx3-ubyte, unpacked\)"):
        D.load_dataset("mnist", data_dir=root)


def test_garbage_file_fails_in_load_dataset(tmp_path, monkeypatch):
    files = write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setattr(D, "MNIST_FILES", files)
    assert len(D.load_dataset("mnist", data_dir=tmp_path).train_x) == 12  # valid as written
    (tmp_path / "mnist" / files["train_images"][0]).write_bytes(b"garbage")
    # The structure is checked before the md5 sum: the message names what is wrong.
    with pytest.raises(AAEError, match="train-images-idx3-ubyte.gz: truncated IDX header"):
        D.load_dataset("mnist", data_dir=tmp_path)


def test_valid_idx_with_other_content_fails_md5(tmp_path, monkeypatch):
    files = write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setattr(D, "MNIST_FILES", files)
    other = write_fake_mnist(tmp_path / "other", seed=1)  # same shapes, other pixels
    name = files["train_images"][0]
    (tmp_path / "mnist" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    assert other["train_images"][1] != files["train_images"][1]
    with pytest.raises(AAEError, match="does not match the published"):
        D.load_dataset("mnist", data_dir=tmp_path)


def test_md5sum_of_an_unreadable_path_is_an_error(tmp_path):
    with pytest.raises(AAEError, match="cannot read"):
        D.md5sum(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------------------------
# Lookup order: data_dir, then $TORCH_AAE_DATA, then ./data


@pytest.fixture
def three_roots(tmp_path, monkeypatch):
    """Three data roots with distinguishable fake MNISTs (10, 11, 12 training images), the
    library's md5 table patched to theirs; cwd = a folder whose ./data is the third root."""
    roots = {"explicit": tmp_path / "explicit", "env": tmp_path / "env", "cwd": tmp_path / "cwd" / "data"}
    files = {}
    for n, (name, root) in zip((10, 11, 12), roots.items()):
        files[name] = write_fake_mnist(root / "mnist", n_train=n, seed=n)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("TORCH_AAE_DATA", raising=False)
    return roots, files


@pytest.mark.parametrize(
    "explicit, env, expected", [(True, True, "explicit"), (False, True, "env"), (False, False, "cwd")]
)
def test_lookup_order(three_roots, monkeypatch, explicit, env, expected):
    roots, files = three_roots
    monkeypatch.setattr(D, "MNIST_FILES", files[expected])
    if env:
        monkeypatch.setenv("TORCH_AAE_DATA", str(roots["env"]))
    data_dir = roots["explicit"] if explicit else None
    folder = D.find_dataset_dir("mnist", data_dir)
    assert folder.resolve() == (roots[expected] / "mnist").resolve()
    data = D.load_dataset("mnist", data_dir=data_dir)
    assert len(data.train_x) == {"explicit": 10, "env": 11, "cwd": 12}[expected]


def test_the_folder_found_is_recorded_so_that_a_run_finds_it_from_elsewhere(three_roots, tmp_path, monkeypatch):
    roots, files = three_roots
    monkeypatch.setattr(D, "MNIST_FILES", files["cwd"])
    data = D.load_dataset("mnist")  # ./data, found from the cwd: no data_dir given
    assert data.source["data_dir"] == str((roots["cwd"] / "mnist").absolute())
    monkeypatch.chdir(tmp_path)  # elsewhere, where ./data is not
    assert len(D.load_dataset("mnist", data.source["data_dir"]).train_x) == 12


def test_a_folder_holding_the_other_dataset_is_passed_over_or_named(tmp_path, monkeypatch):
    from conftest import MNIST_DIR

    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("TORCH_AAE_DATA", str(MNIST_DIR))
    with pytest.raises(AAEError) as err:  # MNIST's files where Fashion-MNIST's are looked for
        D.find_dataset_dir("fashion-mnist")
    assert f"{MNIST_DIR} holds mnist's files, not fashion-mnist's (the two share file names)" in str(err.value)
    assert "delete" not in str(err.value)
    write_fake_mnist(tmp_path / "debian", n_train=10)  # neither dataset's: tried, left to the reader
    assert D.find_dataset_dir("fashion-mnist") == tmp_path / "debian"
    with pytest.raises(AAEError, match="holds mnist's files"):  # a data_dir given is searched alone
        D.find_dataset_dir("fashion-mnist", MNIST_DIR)


def test_files_directly_in_the_root_are_found(tmp_path):
    write_fake_mnist(tmp_path)
    assert D.find_dataset_dir("mnist", tmp_path) == tmp_path


def test_empty_env_var_falls_back_to_cwd(three_roots, monkeypatch):
    roots, _ = three_roots
    monkeypatch.setenv("TORCH_AAE_DATA", "")
    assert D.data_roots() == [Path("data")]
    assert D.find_dataset_dir("mnist").resolve() == (roots["cwd"] / "mnist").resolve()


@pytest.mark.parametrize("how", ["explicit", "env", "cwd"])
def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCH_AAE_DATA", raising=False)
    root = tmp_path / "nowhere"
    data_dir = root if how == "explicit" else None
    if how == "env":
        monkeypatch.setenv("TORCH_AAE_DATA", str(root))
    if how == "cwd":
        root = tmp_path / "data"  # named absolute: "data/mnist" did not say relative to what
    with pytest.raises(AAEError) as err:
        D.load_dataset("mnist", data_dir=data_dir)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert f"{root / 'mnist'}, {root};" in message
    assert "aae download" in message


def test_fashion_mnist_missing_mentions_debian_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("TORCH_AAE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(AAEError, match=f"fashion-mnist.*{tmp_path / 'debian'}"):
        D.load_dataset("fashion-mnist")


def test_fashion_mnist_with_a_wrong_data_dir_is_an_error_not_debians_files(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "debian", n_train=10)  # were they read, the typo would go unseen
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    with pytest.raises(AAEError) as err:
        D.load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and str(tmp_path / "debian") not in str(err.value)


@pytest.mark.parametrize("name", ["nope", "MNIST", "mnist.npy", ""])
def test_unknown_dataset_name(name, tmp_path):
    with pytest.raises(AAEError, match="unknown dataset"):
        D.load_dataset(name, data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# download_mnist from local file:// mirrors


def _mirror(folder: Path, corrupt: str | None = None) -> str:
    """A file:// mirror of the real files (symlinks), one of them optionally corrupted."""
    folder.mkdir(parents=True)
    for fname, _ in D.MNIST_FILES.values():
        if fname == corrupt:
            raw = bytearray((MNIST_DIR / fname).read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            (folder / fname).write_bytes(bytes(raw))
        else:
            (folder / fname).symlink_to(MNIST_DIR / fname)
    return folder.as_uri() + "/"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_from_file_mirror_falls_through_a_failing_one(tmp_path):
    good = _mirror(tmp_path / "good")
    missing = (tmp_path / "missing").as_uri() + "/"
    folder = DL.download_mnist(tmp_path / "root", base_urls=(missing, good))
    assert folder == tmp_path / "root" / "mnist"
    for fname, md5 in D.MNIST_GZ_MD5.items():
        assert (folder / fname).is_file() and not (folder / fname).is_symlink()
        assert md5_of(folder / fname) == md5
    assert _leftovers(folder) == []
    # Everything is present and valid: a second call needs no mirror at all.
    assert DL.download_mnist(tmp_path / "root", base_urls=(missing,)) == folder


def test_download_with_corrupt_mirror_leaves_no_file(tmp_path):
    bad = _mirror(tmp_path / "bad", corrupt="t10k-labels-idx1-ubyte.gz")
    with pytest.raises(AAEError) as err:
        DL.download_mnist(tmp_path / "root", base_urls=(bad,))
    message = str(err.value)
    assert "could not download t10k-labels-idx1-ubyte.gz" in message and "md5" in message
    folder = tmp_path / "root" / "mnist"
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()
    assert _leftovers(folder) == []
    # The files before it were fetched and are intact.
    assert md5_of(folder / "t10k-images-idx3-ubyte.gz") == D.MNIST_GZ_MD5["t10k-images-idx3-ubyte.gz"]


def test_download_skips_corrupt_mirror_and_replaces_corrupt_local_file(tmp_path):
    bad = _mirror(tmp_path / "bad", corrupt="train-labels-idx1-ubyte.gz")
    good = _mirror(tmp_path / "good")
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"stale, corrupt")
    DL.download_mnist(tmp_path / "root", base_urls=(bad, good))
    for fname, md5 in D.MNIST_GZ_MD5.items():
        assert md5_of(folder / fname) == md5
    assert _leftovers(folder) == []


def test_download_counts_an_unpacked_or_regzipped_file_as_present(tmp_path):
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for fname in D.MNIST_GZ_MD5:
        if fname.startswith("train-images"):  # unpacked
            (folder / fname.removesuffix(".gz")).write_bytes(gzip.decompress((MNIST_DIR / fname).read_bytes()))
        else:  # gzipped again, other bytes
            _regzip(MNIST_DIR / fname, folder / fname)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    missing = (tmp_path / "nowhere").as_uri() + "/"
    assert DL.download_mnist(tmp_path / "root", base_urls=(missing,)) == folder  # nothing fetched
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


def test_download_with_only_failing_mirrors_lists_every_error(tmp_path):
    urls = ((tmp_path / "a").as_uri() + "/", (tmp_path / "b").as_uri() + "/")
    with pytest.raises(AAEError) as err:
        DL.download_mnist(tmp_path / "root", base_urls=urls)
    assert "could not download train-images-idx3-ubyte.gz" in str(err.value)
    assert urls[0] in str(err.value) and urls[1] in str(err.value)
    assert list((tmp_path / "root" / "mnist").iterdir()) == []


def test_download_takes_one_mirror_as_a_string_and_names_a_bad_url(tmp_path):
    folder = DL.download_mnist(tmp_path / "root", base_urls=_mirror(tmp_path / "good"))  # not a tuple
    assert sorted(p.name for p in folder.iterdir()) == sorted(f for f, _ in D.MNIST_FILES.values())
    with pytest.raises(AAEError, match="could not download train-images-idx3-ubyte.gz: nowhere: unknown url"):
        DL.download_mnist(tmp_path / "root2", base_urls=("nowhere",))


def test_download_into_a_file_is_one_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(AAEError, match="cannot make .*f/mnist"):
        DL.download_mnist(tmp_path / "f", base_urls=("nowhere",))


def test_aae_download_defaults_to_where_training_looks(tmp_path, monkeypatch, capsys):
    from torch_aae import cli

    monkeypatch.setenv("TORCH_AAE_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(DL.download_mnist, "__defaults__", ((_mirror(tmp_path / "good"),), 60.0, 600.0))  # offline
    assert cli.main(["download"]) == 0
    assert (tmp_path / "env" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


# ----------------------------------------------------------------------------------------------
# .npz files


def _save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "y, y_test, fragment",
    [
        (np.arange(20) % 3 + 1, None, "y holds the labels {1, 2, 3}; the 3 classes must be labelled 0..2"),
        (np.arange(20) % 3 * 100, None, "y holds the labels {0, 100, 200}"),
        (np.arange(20) % 3, np.array([0, 1, 2, 3, 0]), "y_test has label 3, which y does not (0..2)"),
    ],
)
def test_npz_labels_must_be_0_to_k_minus_1(tmp_path, y, y_test, fragment):
    x = np.zeros((20, 3, 4), np.float32)
    extra = {} if y_test is None else {"x_test": np.zeros((5, 3, 4), np.float32), "y_test": y_test}
    path = _save_npz(tmp_path / "mine.npz", x=x, y=y, **extra)
    with pytest.raises(AAEError) as err:
        D.load_dataset(str(path))
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"X_test": 1, "foo": 1}, "unknown arrays 'X_test', 'foo'; a .npz holds x, y, x_test, y_test"),
        ({"y_train": 1}, "unknown array 'y_train'"),
        ({"y_test": 1}, "y_test without x_test"),
    ],
)
def test_npz_unknown_or_orphan_arrays_are_refused(tmp_path, arrays, fragment):
    x = np.zeros((20, 3, 4), np.float32)
    extra = {k: np.zeros(5, np.int64) for k in arrays}
    path = _save_npz(tmp_path / "mine.npz", x=x, **extra)
    with pytest.raises(AAEError) as err:
        D.load_dataset(str(path))
    assert fragment in str(err.value)


def test_npz_valid_with_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((20, 3, 4)).astype(np.float32)
    x_test = rng.random((5, 3, 4))
    y, y_test = np.arange(20) % 3, np.array([0, 1, 2, 2, 0])
    path = _save_npz(tmp_path / "mine.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    data = D.load_dataset(str(path))
    assert data.name == "mine.npz"
    assert data.train_x.shape == (20, 12) and data.train_x.dtype == torch.float32
    assert torch.equal(data.train_x, torch.from_numpy(x.reshape(20, 12)))
    assert data.train_y.dtype == torch.int64 and data.train_y.tolist() == y.tolist()
    assert data.test_x.shape == (5, 12) and data.test_x.dtype == torch.float32
    assert data.test_y.tolist() == y_test.tolist()
    assert data.image_shape == (3, 4) and data.features == 12
    assert data.num_classes == 3  # the classes of y, 0..K-1
    assert data.eval_split()[0] == "test"


def test_npz_without_labels_or_test(tmp_path):
    x = np.linspace(0, 1, 30, dtype=np.float64).reshape(10, 3)
    data = D.load_npz(_save_npz(tmp_path / "x.npz", x=x))
    assert data.train_y is None and data.num_classes is None
    assert data.test_x is None and data.test_y is None
    assert data.image_shape == (3,)
    split, ex, ey = data.eval_split()
    assert split == "train" and ex is data.train_x and ey is None


def _good_x(n=6):
    return np.full((n, 2, 2), 0.5, dtype=np.float32)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.array([{"a": 1}, None], dtype=object)}, "refused"),
        ({"x": _good_x(), "y": np.array([0, "a", None, 1, 2, 3], dtype=object)}, "refused"),
        ({"x": np.array([[0.1, np.nan]])}, "NaN or infinite"),
        ({"x": np.array([[0.1, np.inf]])}, "NaN or infinite"),
        ({"x": np.array([[0.1, 1.5]])}, "values in"),
        ({"x": np.array([[-0.1, 0.5]])}, "values in"),
        ({"x": np.array([[0, 255]], dtype=np.uint8)}, "values in [0, 255]; the BCE loss needs them in [0, 1] (uint8 pixels: divide by 255)"),
        ({"x": np.array([0.1, 0.2])}, "expected grayscale images (n, height, width) or vectors"),
        ({"x": np.full((6, 3, 2, 2), 0.5)}, "shape (6, 3, 2, 2); expected grayscale images"),
        ({"x": np.zeros((0, 4))}, "no rows"),
        ({"x": np.array([["a", "b"]])}, "not numeric"),
        ({"x": _good_x(), "y": np.array([0.0, 1, 2, 0, 1, 2])}, "must be integers"),
        ({"x": _good_x(), "y": np.array([True] * 6)}, "must be integers"),
        ({"x": _good_x(), "y": np.arange(5)}, "expected (6,)"),
        ({"x": _good_x(), "y": np.arange(6).reshape(6, 1)}, "expected (6,)"),
        ({"x": _good_x(), "y": np.array([0, 1, -1, 0, 1, 2])}, "labels in [-1, 2]"),
        ({"images": _good_x()}, "no array named 'x' (found: ['images'])"),
        ({"x": _good_x(), "x_test": np.full((3, 4), 0.5)}, "x_test shape"),
        ({"x": _good_x(), "x_test": np.full((3, 2, 2), 2.0)}, "x_test: values in"),
        ({"x": _good_x(), "y": np.arange(6), "x_test": _good_x(3), "y_test": np.arange(4)},
         "y_test: shape"),  # fmt: skip
        ({"x": _good_x(), "y": np.arange(6), "x_test": _good_x(3)}, "no y_test labels x_test"),
    ],
    ids=["object-x", "object-y", "nan", "inf", "above-1", "below-0", "uint8-255", "rank-1", "rank-4",
         "zero-rows", "strings", "float-labels", "bool-labels", "labels-short", "labels-2d",
         "negative-labels", "missing-x", "test-shape", "test-range", "test-labels", "test-unlabeled"],  # fmt: skip
)
def test_npz_refuses_bad_arrays(tmp_path, arrays, message):
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(AAEError) as err:
        D.load_dataset(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content", [b"", b"not a zip file at all" * 3, b"PK\x03\x04truncated zip"], ids=["empty", "text", "zip-header"]
)
def test_npz_not_a_zip(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(AAEError, match="bad.npz"):
        D.load_npz(path)


def test_npz_that_is_a_plain_npy_file(tmp_path):
    path = tmp_path / "plain.npz"
    with open(path, "wb") as f:
        np.save(f, _good_x())
    with pytest.raises(AAEError, match="not a .npz file"):
        D.load_npz(path)


class TouchOnUnpickle:
    """Unpickling this object creates the file `path`."""

    def __init__(self, path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_npz_object_array_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([TouchOnUnpickle(marker)], dtype=object))
    with np.load(path, allow_pickle=True) as f:  # control: unsafe loading does create it
        f["x"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(AAEError, match="object arrays are not supported"):
        D.load_npz(path)
    assert not marker.exists()


def test_npz_missing_file(tmp_path):
    with pytest.raises(AAEError, match="no such file"):
        D.load_dataset(str(tmp_path / "absent.npz"))


# ----------------------------------------------------------------------------------------------
# Validation split, subset, balanced labels, batches


def _indexed(n: int = 50):
    """A dataset whose pixel 0 of image i is i / 1000 and whose label is i: easy to track."""
    ds = synthetic_dataset(n, shape=(2, 2), classes=n)
    ds.train_x[:, 0] = torch.arange(n) / 1000
    ds.train_y = torch.arange(n)
    return ds


@pytest.mark.parametrize("val_size", [1, 10, 49])
def test_split_validation_sizes_and_disjointness(val_size):
    data = D.split_validation(_indexed(50), val_size, seed=3)
    assert len(data.val_x) == len(data.val_y) == val_size
    assert len(data.train_x) == len(data.train_y) == 50 - val_size
    val, train = set(data.val_y.tolist()), set(data.train_y.tolist())
    assert not val & train and val | train == set(range(50))
    # Images moved together with their labels.
    assert torch.allclose(data.val_x[:, 0], data.val_y / 1000)
    assert torch.allclose(data.train_x[:, 0], data.train_y / 1000)


def test_split_validation_is_deterministic_by_seed():
    a = D.split_validation(_indexed(), 10, seed=1).val_y
    b = D.split_validation(_indexed(), 10, seed=1).val_y
    c = D.split_validation(_indexed(), 10, seed=2).val_y
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("val_size", [-1, 50, 51])
def test_split_validation_bad_size(val_size):
    with pytest.raises(AAEError, match=rf"--val-size {val_size}: must be in 1..49 \(.* has 50 training images"):
        D.split_validation(_indexed(50), val_size, seed=0)


def test_split_validation_of_one_image_says_too_few():
    with pytest.raises(AAEError, match="--val-size 1: .* has 1 training image; too few to split"):
        D.split_validation(_indexed(1), 1, seed=0)


def test_split_validation_without_labels():
    ds = _indexed(20)
    ds.train_y = None
    out = D.split_validation(ds, 5, 0)
    assert out.val_x.shape == (5, 4) and out.val_y is None and out.train_y is None


@pytest.fixture
def fake_mnist_root(tmp_path, monkeypatch):
    """A data root with a fake MNIST of 40 training images; md5 table patched to match."""
    monkeypatch.setattr(D, "MNIST_FILES", write_fake_mnist(tmp_path / "mnist", n_train=40))
    return tmp_path


def test_load_dataset_subset_after_validation(fake_mnist_root):
    full = D.load_dataset("mnist", data_dir=fake_mnist_root)
    data = D.load_dataset("mnist", data_dir=fake_mnist_root, subset=7, val_size=10, seed=4)
    assert len(data.val_x) == 10 and len(data.train_x) == len(data.train_y) == 7
    expected = D.split_validation(full, 10, seed=4)
    assert torch.equal(data.val_x, expected.val_x)
    assert torch.equal(data.train_x, expected.train_x[:7])
    assert len(data.test_x) == 6  # the test split is never cut


@pytest.mark.parametrize("subset", [0, -3, 41])
def test_load_dataset_bad_subset(fake_mnist_root, subset):
    with pytest.raises(AAEError, match=f"--subset {subset}: must be in 1..40"):
        D.load_dataset("mnist", data_dir=fake_mnist_root, subset=subset)


def test_load_dataset_full_subset_is_everything(fake_mnist_root):
    assert len(D.load_dataset("mnist", data_dir=fake_mnist_root, subset=40).train_x) == 40


def test_load_dataset_subset_keeps_each_image_with_its_own_label(fake_mnist_root):
    # --subset cuts images and labels alike: a label moved by one would train on wrong labels.
    full = D.split_validation(D.load_dataset("mnist", data_dir=fake_mnist_root), 10, seed=4)
    data = D.load_dataset("mnist", data_dir=fake_mnist_root, subset=7, val_size=10, seed=4)
    assert torch.equal(data.train_y, full.train_y[:7])
    assert torch.equal(D.load_dataset("mnist", data_dir=fake_mnist_root, subset=5).train_y,
                       D.load_dataset("mnist", data_dir=fake_mnist_root).train_y[:5])  # fmt: skip


LABELS = torch.arange(200) % 10  # 20 images of each class


@pytest.mark.parametrize("n", [10, 50, 200])
def test_balanced_label_indices_counts(n):
    idx = D.balanced_label_indices(LABELS, n, 10, seed=0)
    assert idx.dtype == torch.int64 and len(idx) == n
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == n
    assert torch.bincount(LABELS[idx], minlength=10).tolist() == [n // 10] * 10


def test_balanced_label_indices_deterministic_by_seed():
    a = D.balanced_label_indices(LABELS, 30, 10, seed=5)
    assert torch.equal(a, D.balanced_label_indices(LABELS, 30, 10, seed=5))
    assert not torch.equal(a, D.balanced_label_indices(LABELS, 30, 10, seed=6))


@pytest.mark.parametrize(
    "labels, n, message",
    [
        (LABELS, 0, "must be positive"),
        (LABELS, -10, "must be positive"),
        (LABELS, 210, "only 200 labeled"),
        (LABELS, 25, "divisible by the 10 classes"),
        (torch.cat([LABELS, torch.zeros(50, dtype=torch.int64)]), 250,
         r"class 1 has only 20 images, and a balanced draw takes 25 of each; give at most 200 or --labels all"),  # fmt: skip
        (torch.arange(100) % 5, 20, "class 5 has only 0 images, .* give at most 0"),
    ],
)
def test_balanced_label_indices_errors(labels, n, message):
    with pytest.raises(AAEError, match=message):
        D.balanced_label_indices(labels, n, 10, seed=0)


@pytest.mark.parametrize("n, bs", [(10, 3), (10, 10), (7, 100)])
def test_batches_cover_a_permutation(n, bs):
    parts = D.batches(n, bs, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts[:-1]] == [bs] * (len(parts) - 1)
    assert sorted(torch.cat(parts).tolist()) == list(range(n))


def test_cycled_batch_of_a_set_smaller_than_the_batch_is_the_whole_set_each_step():
    # 10 labeled images and --batch-size 50: each step takes all 10, in a fresh order per pass.
    rows = [D.cycled_batch(10, 50, seed=0, step=s) for s in range(3)]
    assert all(sorted(r.tolist()) == list(range(10)) for r in rows)
    assert not torch.equal(rows[0], rows[1])


@pytest.mark.parametrize("labels", [None, "all"])
def test_labeled_indices_all(labels):
    ds = synthetic_dataset(30, classes=3)
    assert torch.equal(D.labeled_indices(ds, labels, seed=0), torch.arange(30))


def test_labeled_indices_balanced_draw():
    ds = synthetic_dataset(30, classes=3)
    idx = D.labeled_indices(ds, "9", seed=1)
    assert torch.equal(idx, D.balanced_label_indices(ds.train_y, 9, 3, seed=1))
    assert torch.bincount(ds.train_y[idx]).tolist() == [3, 3, 3]


def test_labeled_indices_without_labels():
    ds = synthetic_dataset(30)
    ds.train_y = None
    with pytest.raises(AAEError, match="needs labels"):
        D.labeled_indices(ds, "all", seed=0)


def test_dataset_from_arrays_is_load_npz_without_the_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.random((30, 4, 4)).astype(np.float32), "y": np.arange(30) % 3,
              "x_test": rng.random((6, 4, 4)).astype(np.float32), "y_test": np.arange(6) % 3}  # fmt: skip
    np.savez(tmp_path / "toy.npz", **arrays)
    from_file = D.load_npz(tmp_path / "toy.npz")
    in_memory = D.Dataset.from_arrays(**{k: torch.from_numpy(v) for k, v in arrays.items()}, name="toy.npz")
    for split in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(in_memory, split), getattr(from_file, split)), split
    assert (in_memory.image_shape, in_memory.num_classes, in_memory.source) == ((4, 4), 3, None)
    with pytest.raises(AAEError, match=r"^mine: x: values in \[0, 254\]; .*\(uint8 pixels: divide by 255\)"):
        D.Dataset.from_arrays((arrays["x"] * 255).astype(np.uint8), name="mine")
    with pytest.raises(AAEError, match=r"^arrays: y holds the labels \{1, 2, 3\}"):
        D.Dataset.from_arrays(arrays["x"], arrays["y"] + 1)
    # KeyError 'x' and numpy's "inhomogeneous shape" ValueError before
    with pytest.raises(AAEError, match=r"^arrays: no images: from_arrays needs x$"):
        D.Dataset.from_arrays(None)
    with pytest.raises(AAEError, match=r"^mine: x_test is not an array of one shape \("):
        D.Dataset.from_arrays(arrays["x"], x_test=[[0.1, 0.2], [0.3]], name="mine")


def test_download_falls_through_an_http_protocol_error(tmp_path, monkeypatch):
    """A dropped chunked reply (http.client.IncompleteRead) or a reply that is not HTTP
    (BadStatusLine) ended `aae download` in a traceback, and the next mirror was never tried."""
    import http.client

    good = _mirror(tmp_path / "good")
    real_urlopen = DL.urllib.request.urlopen
    errors = iter([http.client.IncompleteRead(b""), http.client.BadStatusLine("hello")])

    def urlopen(url, timeout):
        if url.startswith("http://broken/"):
            raise next(errors, http.client.BadStatusLine("hello"))
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(DL.urllib.request, "urlopen", urlopen)
    folder = DL.download_mnist(tmp_path / "root", base_urls=("http://broken/", good))
    for fname, md5 in D.MNIST_GZ_MD5.items():
        assert md5_of(folder / fname) == md5
    with pytest.raises(AAEError, match=r"could not download train-images-idx3-ubyte.gz: http://broken/: "):
        DL.download_mnist(tmp_path / "root2", base_urls=("http://broken/",))


def test_download_gives_up_a_trickling_or_endless_mirror(tmp_path, monkeypatch):
    """The timeout bounded each read only: a server that sent a few bytes at a time held the
    download for as long as it liked, and one that sent without end filled the disk."""
    clock = [0.0]

    class Reply(io.BytesIO):  # slow: 10 bytes a second; endless: full reads without end, at once
        def __init__(self, endless):
            super().__init__()
            self.endless = endless

        def read(self, n=-1):
            if self.endless:
                return b"\0" * n
            clock[0] += 1.0
            return b"\0" * 10

    good = _mirror(tmp_path / "good")
    real_urlopen = DL.urllib.request.urlopen

    def urlopen(url, timeout):
        if url.startswith("http://slow/") or url.startswith("http://endless/"):
            return Reply(endless=url.startswith("http://endless/"))
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(DL.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(DL, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))  # download's clock alone
    with pytest.raises(AAEError, match=r"http://slow/: gave up after 30 s \(310 bytes received\); "
                                       r"http://endless/: the reply exceeds 64 MiB"):  # fmt: skip
        DL.download_mnist(tmp_path / "root", base_urls=("http://slow/", "http://endless/"), deadline=30)
    assert list((tmp_path / "root" / "mnist").iterdir()) == []  # no .part left behind
    folder = DL.download_mnist(tmp_path / "root", base_urls=("http://slow/", good), deadline=30)
    for fname, md5 in D.MNIST_GZ_MD5.items():
        assert md5_of(folder / fname) == md5


def test_download_fills_in_the_root_itself_where_training_reads_mnist_from_it(tmp_path):
    """Training reads MNIST from ROOT itself when ROOT/mnist lacks it; download fetched all four
    files into ROOT/mnist instead (from the network, with three of them already in ROOT)."""
    root = tmp_path / "root"
    root.mkdir()
    for fname in D.MNIST_GZ_MD5:
        if not fname.startswith("t10k-labels"):
            (root / fname).symlink_to(MNIST_DIR / fname)
    (root / "mnist").mkdir()  # empty, as a failed download leaves it
    assert DL.download_mnist(root, base_urls=_mirror(tmp_path / "good")) == root
    assert md5_of(root / "t10k-labels-idx1-ubyte.gz") == D.MNIST_GZ_MD5["t10k-labels-idx1-ubyte.gz"]
    assert list((root / "mnist").iterdir()) == [] and D.find_dataset_dir("mnist", root) == root
    # A file of that name in ROOT that is not MNIST's is left alone: the files go to ROOT/mnist.
    other = tmp_path / "other"
    other.mkdir()
    (other / "train-images-idx3-ubyte.gz").write_bytes(b"my own file")
    assert DL.download_mnist(other, base_urls=_mirror(tmp_path / "good2")) == other / "mnist"
    assert (other / "train-images-idx3-ubyte.gz").read_bytes() == b"my own file"
