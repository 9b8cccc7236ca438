"""Datasets: MNIST and Fashion-MNIST from the original IDX files, or a user's own .npz arrays.

A dataset lives in memory as float32 tensors in [0, 1], flattened to (n, features), with the image
shape kept for plots. Batches are drawn from an index permutation (see `batches`), never through a
per-sample Python loader.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import elastic_field, random_affine, random_shift, random_thickness  # noqa: F401  (data's names too)
from .errors import AAEError

# name -> (file name, md5 of the file's uncompressed bytes). A file is read gzipped (the name as
# published) or plain (the name without .gz), and checked by the md5 of its IDX bytes, so that a
# file unpacked or gzipped again by another tool is still recognized.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
# The md5 sums of MNIST's published .gz files, which a download is checked against.
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Fashion-MNIST: Zalando's md5 sums of the uncompressed files (Debian re-compresses them).
FASHION_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist", "fashion-mnist")
NPZ_KEYS = ("x", "y", "x_test", "y_test")  # a .npz dataset's arrays

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # ndim -> magic of an unsigned-byte IDX file


@dataclass
class Dataset:
    """Images as float32 tensors in [0, 1], flattened; labels as int64 tensors (or None).

    `val_x`/`val_y` are set when a validation split was carved from the training set.
    `test_x` is None for a .npz file without test arrays.
    """

    name: str
    train_x: torch.Tensor  # (n_train, features)
    train_y: torch.Tensor | None  # (n_train,)
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    image_shape: tuple[int, ...]
    num_classes: int | None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # How `load_dataset` made it (dataset, data_dir, subset, val_size, seed), for a run's
    # config.json; None for a Dataset built by hand.
    source: dict | None = None

    @property
    def features(self) -> int:
        return self.train_x.shape[1]

    def __repr__(self) -> str:  # the splits' sizes, not their tensors
        size = lambda x: None if x is None else len(x)  # noqa: E731
        return (f"Dataset({self.name!r}, train={size(self.train_x)}, val={size(self.val_x)}, "
                f"test={size(self.test_x)}, image_shape={tuple(self.image_shape)}, num_classes={self.num_classes})")

    def check(self) -> None:
        """Refuse a Dataset that training would fail on late (or silently misread): images not a
        float32 (n, features) tensor in [0, 1] (NaN included), labels not int64 (n,) in
        [0, num_classes), splits of other widths."""
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x is None:
                if y is not None:
                    raise AAEError(f"{self.name}: {split}_y without {split}_x")
                continue
            what = f"{self.name}: {split}_x"
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 2:
                kind = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                raise AAEError(f"{what}: {kind}; expected a float32 tensor (n, features)")
            if x.shape[1] != self.train_x.shape[1]:
                raise AAEError(f"{what}: {x.shape[1]} features, train_x {self.train_x.shape[1]}")
            if len(x) and not (x.min() >= 0 and x.max() <= 1):  # NaN fails both
                if x.isnan().any():
                    raise AAEError(f"{what}: {int(x.isnan().sum())} NaN values; expected numbers in [0, 1]")
                raise AAEError(f"{what}: values in [{float(x.min())}, {float(x.max())}]; expected [0, 1]")
            if y is not None and (not isinstance(y, torch.Tensor) or y.dtype != torch.int64
                                  or tuple(y.shape) != (len(x),)):  # fmt: skip
                kind = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise AAEError(f"{self.name}: {split}_y: {kind}; expected int64 labels ({len(x)},)")
            if y is not None and len(y) and not (y.min() >= 0 and (self.num_classes is None or y.max() < self.num_classes)):
                raise AAEError(f"{self.name}: {split}_y: labels {int(y.min())} to {int(y.max())}; expected "
                               f"0 to {'num_classes - 1' if self.num_classes is None else self.num_classes - 1}")  # fmt: skip
        if math.prod(self.image_shape) != self.features:
            raise AAEError(f"{self.name}: image_shape {tuple(self.image_shape)} holds "
                           f"{math.prod(self.image_shape)} values, not the images' {self.features}")  # fmt: skip

    @classmethod
    def from_arrays(cls, x, y=None, x_test=None, y_test=None, name: str = "arrays") -> "Dataset":
        """A Dataset of in-memory images, checked and converted as `load_npz` does a file's
        arrays: x (n, h, w) or (n, d) in [0, 1] (numpy arrays or tensors), integer labels y
        holding each of 0..K-1, x_test and y_test as x and y. No validation split is carved."""
        given = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
        if x is None:
            raise AAEError(f"{name}: no images: from_arrays needs x")

        def numpy(k, v):  # bf16 and fp16 tensors as float32, which holds their values exactly
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu()
                return (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy()
            try:
                return np.asarray(v)
            except ValueError as e:  # ragged nested lists
                raise AAEError(f"{name}: {k} is not an array of one shape ({e})") from None

        arrays = {k: numpy(k, v) for k, v in given.items() if v is not None}
        return _dataset_of(arrays, name, name)

    def check_labeled_splits(self, kind: str) -> None:
        """Refuse, for a model that scores its validation and test splits by their labels, a
        split without labels beside labeled training images (it failed after training)."""
        if self.train_y is None:
            return
        for split in ("val", "test"):
            if getattr(self, f"{split}_x") is not None and getattr(self, f"{split}_y") is None:
                raise AAEError(f"{self.name}: train_y labels train_x, but {split}_y is None, and the {kind} "
                               f"model scores {split}_x by its labels: give {split}_y or drop {split}_x")  # fmt: skip

    def eval_split(self) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """The split that final metrics are computed on: the test set, else the training set."""
        if self.test_x is not None:
            return "test", self.test_x, self.test_y
        return "train", self.train_x, self.train_y


# ----------------------------------------------------------------------------------------------
# IDX files


def md5sum(path: Path) -> str:
    """md5 of a file's bytes."""
    digest = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise AAEError(f"cannot read {path}: {e}") from None
    return digest.hexdigest()


def parse_idx(raw: bytes, ndim: int, source: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an unsigned-byte IDX file with `ndim` dimensions into a uint8 array."""
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise AAEError(f"{source}: truncated IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise AAEError(
            f"{source}: bad magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
            f"(unsigned-byte IDX with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise AAEError(
            f"{source}: header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_bytes(path: Path) -> bytes:
    """The IDX bytes of a gzipped or plain file (told apart by gzip's magic bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise AAEError(f"{path}: not a readable gzip IDX file ({e})") from None
    return raw


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped (or plain) unsigned-byte IDX file."""
    return parse_idx(read_idx_bytes(path), ndim, source=str(path))


def idx_path(folder: Path, fname: str) -> Path | None:
    """The file `fname` (a name ending in .gz) in `folder`, gzipped or, failing that, unpacked
    (the name without .gz); None if neither is there."""
    for path in (folder / fname, folder / fname.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


def read_idx_dataset(folder: Path, files: dict, name: str) -> Dataset:
    """Read the four IDX files of an MNIST-format dataset from `folder`, checking the md5 sums
    of their uncompressed bytes."""
    # Structure first (magic, dimensions, counts: the most specific message), then md5 sums.
    raws, arrays = {}, {}
    for key, (fname, _) in files.items():
        path = idx_path(folder, fname)
        if path is None:
            raise AAEError(f"{name}: missing file {folder / fname} (or {fname.removesuffix('.gz')}, unpacked)")
        raws[key] = (path, read_idx_bytes(path))
        arrays[key] = parse_idx(raws[key][1], ndim=3 if key.endswith("images") else 1, source=str(path))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise AAEError(
                f"{name}: {split} set has {len(images)} images but {len(labels)} labels"
            )
        if labels.size and labels.max() > 9:
            raise AAEError(f"{name}: {split} labels go up to {labels.max()}, expected 0..9")
    for key, (path, raw) in raws.items():
        actual, expected = hashlib.md5(raw).hexdigest(), files[key][1]
        if actual != expected:
            raise AAEError(
                f"{path}: md5 {actual} of its IDX bytes does not match the published {expected}; "
                "the file is corrupt or not the original (delete it and download again)"
            )
    shape = tuple(arrays["train_images"].shape[1:])
    return Dataset(
        name=name,
        train_x=_to_float(arrays["train_images"]),
        train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_x=_to_float(arrays["test_images"]),
        test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        image_shape=shape,
        num_classes=10,
    )


def _to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w) -> float32 (n, h*w) in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


# ----------------------------------------------------------------------------------------------
# Where files are looked for, and downloading them


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The data roots in lookup order: `data_dir`, else $TORCH_AAE_DATA, else ./data."""
    if data_dir is not None:
        return [Path(data_dir)]
    if os.environ.get("TORCH_AAE_DATA"):
        return [Path(os.environ["TORCH_AAE_DATA"])]
    return [Path("data")]


def find_dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding `name`'s IDX files: ROOT/NAME (or ROOT itself if the files are there);
    for Fashion-MNIST without an explicit `data_dir`, Debian's /usr/share/datasets/fashion-mnist
    is tried last (a `data_dir` given is searched alone, so that a wrong one is an error)."""
    files = MNIST_FILES if name == "mnist" else FASHION_MNIST_FILES
    first = next(iter(files.values()))[0]
    candidates = []
    for root in data_roots(data_dir):
        candidates += [root / name, root]
    if name == "fashion-mnist" and data_dir is None:
        candidates.append(DEBIAN_FASHION_MNIST_DIR)
    hint = (
        "run `aae download --data-dir DIR` when online"
        if name == "mnist"
        else "install Debian's dataset-fashion-mnist or pass --data-dir"
    )
    other = []  # folders holding the other dataset's files, which have the same names
    for folder in candidates:
        path = idx_path(folder, first)
        if path is not None:
            if not _is_other_dataset(path, name):
                return folder
            other.append(str(folder))
    if other:
        theirs = "fashion-mnist" if name == "mnist" else "mnist"
        raise AAEError(f"{name}: {', '.join(other)} hold{'s' if len(other) == 1 else ''} {theirs}'s "
                       f"files, not {name}'s (the two share file names); {hint}")  # fmt: skip
    looked = ", ".join(str(c.absolute()) for c in candidates)  # "data/mnist": relative to what?
    raise AAEError(f"{name}: no {first} (or {first.removesuffix('.gz')}) in {looked}; {hint}")


def _idx_md5(path: Path) -> str | None:
    """md5 of the IDX bytes of a gzipped or plain file; None if it cannot be read."""
    try:
        return hashlib.md5(read_idx_bytes(path)).hexdigest()
    except AAEError:
        return None


def _is_other_dataset(path: Path, name: str) -> bool:
    """Whether `path`, a training-images file found for `name`, is the other dataset's (MNIST and
    Fashion-MNIST use the same file names). By md5; a file that is neither, or that cannot be
    read, is left to the reader, whose checks say what is wrong with it."""
    if name == "mnist" and path.name in MNIST_GZ_MD5 and md5sum(path) == MNIST_GZ_MD5[path.name]:
        return False  # MNIST as published: no need to unpack it
    other = FASHION_MNIST_FILES if name == "mnist" else MNIST_FILES
    return _idx_md5(path) == other["train_images"][1]


# ----------------------------------------------------------------------------------------------
# A user's own arrays


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load `x` (n, h, w) or (n, d) in [0, 1] and optional integer `y` (and `x_test`, `y_test`,
    which `y` then needs) from a .npz.

    Loaded with allow_pickle=False: object arrays are refused, never unpickled.
    """
    path = Path(path)
    arrays = _read_npz(path)
    if "x" not in arrays:
        raise AAEError(f"{path}: no array named 'x' (found: {sorted(arrays) or 'none'})")
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    if unknown:  # e.g. a misspelt y_test: ignored, the metrics would silently use other images
        raise AAEError(f"{path}: unknown array{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(map(repr, unknown))}; a .npz holds {', '.join(NPZ_KEYS)}")  # fmt: skip
    return _dataset_of(arrays, str(path), path.name)


def _dataset_of(arrays: dict, what: str, name: str) -> Dataset:
    """The Dataset of arrays x, y, x_test, y_test (load_npz's), each checked; `what` names their
    source in errors."""
    if "y_test" in arrays and "x_test" not in arrays:
        raise AAEError(f"{what}: y_test without x_test; add the test images or drop y_test")
    x = _check_images(arrays["x"], f"{what}: x")
    y = _check_labels(arrays.get("y"), len(x), f"{what}: y")
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _check_images(arrays["x_test"], f"{what}: x_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise AAEError(f"{what}: x_test shape {x_test.shape[1:]} differs from x {x.shape[1:]}")
        y_test = _check_labels(arrays.get("y_test"), len(x_test), f"{what}: y_test")
        if y is not None and y_test is None:
            raise AAEError(f"{what}: y labels x, but no y_test labels x_test; add y_test (the test "
                           "metrics need it) or drop x_test")  # fmt: skip
    num_classes = None
    if y is not None:
        num_classes = _check_classes(y, y_test, what)
    flat = lambda a: torch.from_numpy(np.ascontiguousarray(a.reshape(len(a), -1), np.float32))
    label = lambda a: None if a is None else torch.from_numpy(a.astype(np.int64))
    return Dataset(
        name=name,
        train_x=flat(x),
        train_y=label(y),
        test_x=None if x_test is None else flat(x_test),
        test_y=label(y_test),
        image_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


def load_npz_images(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images `x` of a .npz, (n, h, w) or (n, d) in [0, 1] as `load_npz` checks them, as a
    float32 tensor of that shape, and its integer labels `y` (n,) if it has them, of any classes.
    Any other array is refused (a misspelt y would be lost)."""
    path = Path(path)
    arrays = _read_npz(path)
    if "x" not in arrays:
        raise AAEError(f"{path}: no array named 'x' (found: {sorted(arrays) or 'none'})")
    unknown = sorted(set(arrays) - {"x", "y"})
    if unknown:
        raise AAEError(f"{path}: unknown array{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(map(repr, unknown))}; images to encode are x, and their labels y")  # fmt: skip
    x = _check_images(arrays["x"], f"{path}: x")
    y = _check_labels(arrays.get("y"), len(x), f"{path}: y")
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return x, None if y is None else torch.from_numpy(y.astype(np.int64))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, refused with one clear error if it is not one (or holds object
    arrays: allow_pickle=False, nothing is unpickled)."""
    if not path.is_file():
        raise AAEError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise AAEError(f"{path}: cannot read ({e.strerror})") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a .npz is a zip archive
        raise AAEError(f"{path}: not a .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        hint = "; object arrays are not supported" if "bject array" in str(e) else ""
        raise AAEError(f"{path}: refused ({e}){hint}") from None
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError, ...
        raise AAEError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return arrays


def _check_classes(y: np.ndarray, y_test: np.ndarray | None, path: str) -> int:
    """The number of classes K: y must hold each of 0..K-1 (a label outside, or a class without
    images, would make a K-way classifier with empty classes), and y_test only those."""
    present = np.unique(y)
    k = len(present)
    if not np.array_equal(present, np.arange(k)):
        shown = ", ".join(map(str, present[:12])) + (", ..." if k > 12 else "")
        raise AAEError(f"{path}: y holds the labels {{{shown}}}; the {k} classes must be labelled "
                       f"0..{k - 1}, each with images (e.g. map them with np.unique(y, "
                       "return_inverse=True))")  # fmt: skip
    if y_test is not None and len(y_test) and y_test.max() >= k:
        raise AAEError(f"{path}: y_test has label {y_test.max()}, which y does not (0..{k - 1})")
    return k


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise AAEError(f"{what}: dtype {x.dtype} is not numeric")
    if x.ndim not in (2, 3):
        raise AAEError(f"{what}: shape {x.shape}; expected grayscale images (n, height, width) or "
                       "vectors (n, features)")  # fmt: skip
    if len(x) == 0:
        raise AAEError(f"{what}: no rows")
    if not np.isfinite(x).all():
        raise AAEError(f"{what}: contains NaN or infinite values")
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 1:
        hint = " (uint8 pixels: divide by 255)" if x.dtype == np.uint8 else ""
        raise AAEError(f"{what}: values in [{lo}, {hi}]; the BCE loss needs them in [0, 1]{hint}")
    return x


def _check_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.dtype.kind not in "iu":
        raise AAEError(f"{what}: dtype {y.dtype}; labels must be integers")
    if y.shape != (n,):
        raise AAEError(f"{what}: shape {y.shape}; expected ({n},) to match the images")
    if n and (y.min() < 0 or y.max() > 10_000):
        raise AAEError(f"{what}: labels in [{y.min()}, {y.max()}]; expected 0..K-1")
    return y


# ----------------------------------------------------------------------------------------------
# Entry point and splits


def load_dataset(
    dataset: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    val_size: int = 0,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by name (`mnist`, `fashion-mnist`) or from a .npz path.

    Args:
        subset: keep only the first `subset` training images (after the validation split).
        val_size: carve a validation split of this many images from the training set, by `seed`.
    """
    if dataset.endswith(".npz"):
        dataset = absolute_path(dataset)
        data = load_npz(dataset)
    elif dataset in DATASETS:
        folder = find_dataset_dir(dataset, data_dir)
        files = MNIST_FILES if dataset == "mnist" else FASHION_MNIST_FILES
        data = read_idx_dataset(folder, files, dataset)
        data_dir = folder  # recorded: the run finds its files again from any folder
    else:
        raise AAEError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} or a .npz path"
        )
    if val_size:
        data = split_validation(data, val_size, seed)
    if subset is not None:
        if not 0 < subset <= len(data.train_x):
            raise AAEError(f"--subset {subset}: must be in 1..{len(data.train_x)}")
        data.train_x = data.train_x[:subset]
        data.train_y = None if data.train_y is None else data.train_y[:subset]
    data_dir = None if data_dir is None else absolute_path(data_dir)
    data.source = {"dataset": dataset, "data_dir": data_dir, "subset": subset, "val_size": val_size,
                   "seed": seed}  # fmt: skip
    return data


def absolute_path(path: str | os.PathLike) -> str:
    """`path` as an absolute path (`~` expanded): what a run records, valid from any folder."""
    return str(Path(path).expanduser().absolute())


def split_validation(data: Dataset, val_size: int, seed: int) -> Dataset:
    """Move `val_size` training images, chosen by `seed`, into data.val_x / data.val_y."""
    n = len(data.train_x)
    if n < 2:
        raise AAEError(f"--val-size {val_size}: {data.name} has {n} training image; too few to split")
    if not 0 < val_size < n:
        raise AAEError(f"--val-size {val_size}: must be in 1..{n - 1} ({data.name} has {n} "
                       "training images; some must stay for training)")  # fmt: skip
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_size].sort().values, perm[val_size:].sort().values
    data.val_x, data.train_x = data.train_x[val], data.train_x[train]
    if data.train_y is not None:
        data.val_y, data.train_y = data.train_y[val], data.train_y[train]
    return data


def labeled_indices(data: Dataset, labels: str | None, seed: int) -> torch.Tensor:
    """Indices of the training images whose labels a model may use: all of them for
    `labels` None or "all", else a class-balanced draw of int(labels) by `seed`."""
    if data.train_y is None:
        raise AAEError(f"{data.name}: this model needs labels, and the dataset has none")
    if labels in (None, "all"):
        return torch.arange(len(data.train_y))
    return balanced_label_indices(data.train_y, int(labels), data.num_classes, seed)


def balanced_label_indices(labels: torch.Tensor, n: int, num_classes: int, seed: int,
                           flag: str = "--labels"):  # fmt: skip
    """Pick `n` indices, n / num_classes per class, at random by `seed`.

    Args:
        flag: the option that asked for them, for the errors.
    Returns:
        A sorted int64 tensor of indices into `labels`.
    """
    if n <= 0:
        raise AAEError(f"{flag} {n}: must be positive")
    if n > len(labels):
        every = " or --labels all" if flag == "--labels" else ""
        raise AAEError(f"{flag} {n}: only {len(labels)} labeled training images exist; give at most "
                       f"{len(labels)}{every}")  # fmt: skip
    if n % num_classes:
        raise AAEError(
            f"{flag} {n}: must be divisible by the {num_classes} classes for a balanced draw"
        )
    per_class = n // num_classes
    fewest = int(torch.bincount(labels, minlength=num_classes).min())
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < per_class:
            every = " or --labels all" if flag == "--labels" else ""
            raise AAEError(f"{flag} {n}: class {c} has only {len(members)} images, and a balanced "
                           f"draw takes {per_class} of each; give at most {fewest * num_classes}{every}")  # fmt: skip
        picked.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """A fresh random permutation of range(n) cut into index batches (the last may be short)."""
    perm = torch.randperm(n, generator=generator)
    return perm.split(batch_size)


def cycled_batch(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of batch number `step` when cycling through range(n) in full batches, with a fresh
    permutation for every pass drawn from (seed, pass). A pure function of its arguments, so a
    resumed run draws exactly the batches it would have drawn."""
    batch_size = min(batch_size, n)
    pass_, i = divmod(step, n // batch_size)
    return _pass_permutation(n, seed, pass_)[i * batch_size : (i + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _pass_permutation(n: int, seed: int, pass_: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + pass_) % 2**63)
    return torch.randperm(n, generator=gen)
