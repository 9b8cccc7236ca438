"""Fetching MNIST for a user who is online: each missing file from the first mirror that has it,
md5-checked and written atomically (the tests fetch from local file:// mirrors)."""

from __future__ import annotations

import http.client
import os
import time
import urllib.request
from pathlib import Path

from .checkpoint import create_temp_file
from .data import MNIST_FILES, MNIST_GZ_MD5, _idx_md5, idx_path, md5sum
from .errors import AAEError

MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MAX_BYTES = 64 << 20  # MNIST's largest file has 9.9 MB: a reply longer than this is not it


def download_mnist(
    root: str | os.PathLike,
    base_urls: tuple[str, ...] = MNIST_URLS,
    timeout: float = 60.0,
    deadline: float = 600.0,
) -> Path:
    """Fetch the missing MNIST files into ROOT/mnist, md5-checked, each written atomically (a
    file there unpacked or gzipped again, with the right IDX bytes, counts as present).

    Args:
        root: data root; files go to root/mnist, or to root itself where training would read
            them from there (MNIST's training images in root, none in root/mnist).
        base_urls: mirrors tried in order (any urllib URL, `file://` included).
        timeout: seconds to wait for the connection and for each read.
        deadline: seconds for one file from one mirror; a mirror that sends slower than that
            is given up for the next one.
    Returns:
        The folder holding the four files.
    """
    if isinstance(base_urls, str):
        base_urls = (base_urls,)
    folder = _target_folder(Path(root))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a folder should be, no permission, ...
        raise AAEError(f"cannot make {folder}: {e.strerror or e}") from None
    for fname, md5 in MNIST_GZ_MD5.items():
        if _holds(folder, fname):
            continue
        target = folder / fname
        errors = []
        for base in base_urls:
            try:
                _fetch_atomic(base.rstrip("/") + "/" + fname, target, md5, timeout, deadline)
                break
            except (OSError, ValueError, AAEError, http.client.HTTPException) as e:  # ValueError: not a URL
                errors.append(f"{base}: {' '.join(str(e).split())}")  # one line (a redirect loop's has three)
        else:
            raise AAEError(f"could not download {fname}: " + "; ".join(errors))
    return folder


def _target_folder(root: Path) -> Path:
    """ROOT/mnist, or ROOT itself where `find_dataset_dir` reads MNIST from there: ROOT holds
    MNIST's training images (checked by md5, so that no file of ROOT that is not MNIST's is
    replaced) and ROOT/mnist has none."""
    first = MNIST_FILES["train_images"][0]
    if idx_path(root / "mnist", first) is None and _holds(root, first):
        return root
    return root / "mnist"


def _holds(folder: Path, fname: str) -> bool:
    """Whether `folder` holds MNIST's file `fname` (a .gz name): as published, or unpacked or
    gzipped again by another tool, with the right IDX bytes."""
    present = idx_path(folder, fname)  # the .gz first, else the unpacked file
    if present is None:
        return False
    raw_md5 = dict(MNIST_FILES.values())[fname]  # of the IDX bytes
    return md5sum(present) == MNIST_GZ_MD5.get(present.name) or _idx_md5(present) == raw_md5


def _fetch_atomic(url: str, target: Path, md5: str, timeout: float, deadline: float) -> None:
    fd, tmp = create_temp_file(target, ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            _copy_bounded(resp, out, deadline)
            out.flush()
            os.fsync(out.fileno())
        actual = md5sum(Path(tmp))
        if actual != md5:
            raise AAEError(f"md5 {actual} of the downloaded file does not match {md5}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _copy_bounded(resp, out, deadline: float) -> None:
    """Copy the reply into `out`, giving up past `deadline` seconds or MAX_BYTES bytes (the
    socket's timeout bounds each read only: a server that trickles bytes would hold on forever,
    one that sends without end would fill the disk)."""
    start, size = time.monotonic(), 0
    while chunk := resp.read(1 << 16):
        size += len(chunk)
        if size > MAX_BYTES:
            raise AAEError(f"the reply exceeds {MAX_BYTES >> 20} MiB, more than any MNIST file")
        if time.monotonic() - start > deadline:
            raise AAEError(f"gave up after {deadline:g} s ({size} bytes received)")
        out.write(chunk)
