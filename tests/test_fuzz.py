"""Property-based tests: the readers and the config parser turn any input, however broken, into
either a valid result or the library's own AAEError, never another exception."""

import gzip
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_aae.config import from_dict
from torch_aae.data import load_npz, parse_idx, read_idx
from torch_aae.errors import AAEError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_idx(n=3, h=4, w=5) -> bytes:
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, h, w))
    return header + bytes(range(n * h * w))


def mutate(data: bytes, draw) -> bytes:
    """Flip, insert, delete or truncate bytes at drawn positions."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def accepts_or_refuses(fn, *args):
    try:
        return fn(*args)
    except AAEError:
        return None


@FUZZ
@given(raw=st.binary(max_size=200), ndim=st.sampled_from([1, 3]))
def test_parse_idx_random_bytes(raw, ndim):
    out = accepts_or_refuses(parse_idx, raw, ndim)
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == ndim


@FUZZ
@given(data=st.data(), compress=st.booleans())
def test_read_idx_mutated_files(tmp_path, data, compress):
    raw = valid_idx()
    if compress:
        raw = gzip.compress(raw)
    path = tmp_path / "f.idx"
    path.write_bytes(mutate(raw, data.draw))
    out = accepts_or_refuses(read_idx, path, 3)
    if out is not None:
        assert out.ndim == 3 and out.size == np.prod(out.shape)


def valid_npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, x=rng.random((6, 2, 3)), y=np.arange(6) % 3)
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_load_npz_mutated_files(tmp_path, data):
    path = tmp_path / "d.npz"
    path.write_bytes(mutate(valid_npz(), data.draw))
    out = accepts_or_refuses(load_npz, path)
    if out is not None:
        assert out.train_x.min() >= 0 and out.train_x.max() <= 1


@FUZZ
@given(raw=st.binary(max_size=300))
def test_load_npz_random_bytes(tmp_path, raw):
    path = tmp_path / "r.npz"
    path.write_bytes(raw)
    with pytest.raises(AAEError):
        load_npz(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["dataset", "subset", "val_size", "labels", "z_dim", "prior_std", "hidden", "dropout",
     "epochs", "batch_size", "lr_recon", "device", "seed", "bogus"]
)


@FUZZ
@given(
    d=st.dictionaries(
        st.sampled_from(["model_kind", "data", "model", "train", "extra"]),
        st.dictionaries(field_names, json_values, max_size=4) | json_values,
        max_size=4,
    )
)
def test_config_from_dict_random(d):
    config = accepts_or_refuses(from_dict, d)
    if config is not None:
        assert config.train.epochs > 0 and config.train.batch_size > 0
