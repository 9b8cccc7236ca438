"""Checkpoints and atomic file writes.

A checkpoint is one mapping of plain data: every network's and optimizer's state_dict, the
model's constructor arguments, the config, the training position, RNG states and a format
version. It is loaded with `torch.load(weights_only=True)`, which refuses anything that would
run code while unpickling. A readable JSON file with the metadata is written beside it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import AAEError

FORMAT_VERSION = 1


def create_temp_file(target: Path, suffix: str) -> tuple[int, str]:
    """A new hidden file beside `target`, opened for writing: (descriptor, path).

    Unlike `tempfile.mkstemp`, which always makes mode 0600, the file gets the mode an ordinary
    new file gets (0666 less the umask), so that renaming it onto `target` gives a run folder
    the rest of a group can read.
    """
    target = Path(target)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise AAEError(f"could not create a temporary file beside {target}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a full disk: "No space left" alone
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """The JSON content of `path`, or None when the file does not exist; unreadable is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AAEError(f"{path}: unreadable ({e})") from None


def read_json_object(path: Path) -> dict | None:
    """`read_json` of a file that holds a JSON object (a run's or a bench's); anything else is an
    error too."""
    content = read_json(path)
    if content is not None and not isinstance(content, dict):
        raise AAEError(f"{path}: a JSON {type(content).__name__}, not the object a bench or run writes")
    return content


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def rng_state() -> dict:
    """Every RNG state the training touches, as plain data that weights_only loading accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, payload: dict, meta: dict) -> None:
    """Write payload (state_dicts and plain data) atomically to `path`, meta to path.json."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())
    write_checkpoint_meta(path, meta)


def write_checkpoint_meta(path: Path, meta: dict) -> None:
    """The readable metadata of the checkpoint at `path`, in path.json."""
    atomic_write_json(Path(path).with_suffix(".json"), {"format_version": FORMAT_VERSION, **meta})


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint`; refuses pickled code and bad files."""
    path = Path(path)
    if not path.is_file():
        raise AAEError(f"{path}: no such checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4:  # shorter than any header: a write cut short (torch.load would call it code)
        raise AAEError(f"{path}: not a readable checkpoint (truncated or corrupt?): {len(head)} bytes")
    # torch.save writes a zip archive (older versions: a pickle, PROTO opcode first); anything
    # else (a JSON file, text) is not a checkpoint at all, whatever torch.load would say of it.
    if not (head == b"PK\x03\x04" or head.startswith(b"\x80")):
        raise AAEError(f"{path}: not a checkpoint (not a file written by torch.save; a run's "
                       "checkpoint is RUN/checkpoints/latest.pt)")  # fmt: skip
    if head == b"PK\x03\x04":
        _check_records(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({unsupported.group(1)})" if unsupported else ""
        raise AAEError(
            f"{path}: refused to load: it holds objects{what} that safe (weights_only) loading "
            "does not allow, possibly code"
        ) from None
    except Exception as e:  # a corrupt pickle can raise nearly anything: KeyError, TypeError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AAEError(f"{path}: not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise AAEError(f"{path}: not a torch-aae checkpoint (no format_version)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise AAEError(
            f"{path}: checkpoint format {ckpt['format_version']}, this version reads {FORMAT_VERSION}"
        )
    for key in ("model_kind", "model_args", "networks", "config"):
        if key not in ckpt:
            raise AAEError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def _check_records(path: Path) -> None:
    """Check the CRC-32 of every record of a checkpoint's zip archive. torch.save writes them, but
    torch.load does not check them, so a changed byte inside a tensor would load unseen."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise AAEError(f"{path}: not a readable checkpoint (truncated or corrupt?): {e}") from None
    if bad is not None:
        raise AAEError(f"{path}: damaged: its record {bad} does not match its CRC-32 (a byte changed "
                       "since it was written); start again from an earlier checkpoint that "
                       "--keep-checkpoints kept (--branch-from RUN/checkpoints/epoch-NNNN.pt of an "
                       "earlier epoch: the copy of latest.pt's own epoch is usually a hard link to the "
                       "same bytes), or train again")  # fmt: skip


def load_state(module: torch.nn.Module, state: dict, what: str) -> None:
    """load_state_dict with a one-line error on a shape or key mismatch."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AAEError(f"checkpoint does not fit the model's {what}: {detail}") from None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoints" / "latest.pt").is_file():  # a run writes it at its first checkpoint
            raise AAEError(f"{path}: no such checkpoint in this folder (checkpoints/latest.pt): not "
                           "a run folder, or a run stopped before its first checkpoint")  # fmt: skip
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise AAEError(f"{path}: no such checkpoint (give a run folder or a .pt file)")
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", prior=None):
    """Rebuild a model from a run folder or checkpoint file, in eval mode.

    Args:
        prior: the prior object, required when the model was trained with a custom prior.
    """
    return model_from_checkpoint(load_checkpoint(resolve_checkpoint(path)), path, device, prior)


def model_from_checkpoint(ckpt: dict, path, device: str | torch.device = "cpu", prior=None):
    """`load_model` on a checkpoint already loaded from `path` (named in errors)."""
    from .variants import get_variant

    from .train import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    if Path(path).is_dir():  # a run folder's checkpoint: of the model its config.json records
        from .run_folder import check_config_file

        check_config_file(Path(path), ckpt, model_only=True)
    args = dict(ckpt["model_args"])
    custom = args.get("prior") == "custom"
    if custom:
        if prior is None:
            raise AAEError(f"{path}: the model was trained with a custom prior, a Python object: "
                           "pass it from Python, as load_model(run, prior=...), "
                           "evaluate_run(run, prior=...) or plot_run(run, prior=...)")  # fmt: skip
        args["prior"] = prior
        # Recorded beside "custom" and read by nothing: the constructor now refuses it when not
        # the default, which a model saved by an earlier version may hold; put back below.
        saved_std = args.pop("prior_std", None)
    elif prior is not None:
        raise AAEError(f"{path}: the model's prior is built from its arguments "
                       f"({args.get('prior', 'gaussian')}); prior= is for a custom prior")  # fmt: skip
    try:
        model = get_variant(ckpt["model_kind"]).MODEL(**args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise AAEError(f"{path}: its model arguments do not fit this version ({e})") from None
    if custom:
        if saved_std is not None:
            model.model_args["prior_std"] = saved_std  # as recorded: a resume compares model_args
        _check_custom_parts(model, ckpt["networks"], path)
    load_state(model, ckpt["networks"], "networks")
    return model.to(device).eval()


def saved_parts(networks: dict, z_dim: int) -> int:
    """K, the prior's parts, of a label-conditioned unsupervised model's saved networks: its
    discriminator reads z and a one-hot of K + 1 label states."""
    return networks[CONDITIONED_INPUT].shape[1] - z_dim - 1


CONDITIONED_INPUT = "latent_discriminator.net.0.weight"  # (hidden, z_dim + K + 1)


def _check_custom_parts(model, networks: dict, path) -> None:
    """Refuse a custom prior of another number of parts than the run's, for a model conditioned
    on labels: the weights would not fit (PyTorch's size mismatch, in the discriminator's words
    rather than the prior's)."""
    k = getattr(model, "condition_classes", 0)
    if not k or CONDITIONED_INPUT not in networks:
        return
    saved_k = saved_parts(networks, model.z_dim)
    if saved_k != k:
        raise AAEError(f"{path}: the run's prior had {saved_k} parts (num_classes); prior= has {k}: "
                       "pass the prior the run trained with")  # fmt: skip


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Save a model's weights and constructor arguments (no optimizer state) atomically."""
    payload = {"model_kind": model.kind, "model_args": model.model_args, "config": {},
               "networks": model.state_dict()}  # fmt: skip
    save_checkpoint(Path(path), payload, {"model_kind": model.kind, "model_args": model.model_args})
