"""Checkpoints (safe loading, round trips, incompatible models), run folders and resuming."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import random

import numpy as np
import pytest
import torch

from conftest import subset_of, synthetic_dataset, tiny_model, tiny_train
from torch_aae import checkpoint as ck
from torch_aae import stopping, unsupervised
from torch_aae.checkpoint import load_checkpoint, load_model, load_state, save_model
from torch_aae.errors import AAEError, Interrupted
from torch_aae.train import CHECKPOINT, RunFolder, check_compatible, fit
from torch_aae.priors import GaussianPrior, MixturePrior, SwissRollPrior, UniformPrior

# ----------------------------------------------------------------------------------------------
# save_model / load_model


def _outputs(model, x):
    torch.manual_seed(5)
    with torch.no_grad():
        z = model.encode(x)
        return z, model.decode(z), model.latent_discriminator(z), model.sample(4)


def test_save_and_load_model_round_trip(tmp_path):
    model = tiny_model(seed=1, z_dim=3, hidden=48, dropout=0.2, prior_std=2.0).eval()
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path)
    assert json.loads(path.with_suffix(".json").read_text())["model_args"] == model.model_args
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.model_args == model.model_args and loaded.prior.std == 2.0
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(6, 784)
    for a, b in zip(_outputs(model, x), _outputs(loaded, x)):
        assert torch.equal(a, b)
    # A differently seeded model gives different outputs: the comparison above can fail.
    other = tiny_model(seed=2, z_dim=3, hidden=48, prior_std=2.0).eval()
    assert not torch.equal(_outputs(other, x)[1], _outputs(model, x)[1])


def test_load_model_from_a_run_folder(tmp_path):
    model = tiny_model()
    save_model(model, tmp_path / "run" / CHECKPOINT)
    loaded = load_model(tmp_path / "run")
    assert torch.equal(loaded.decoder.net[0].weight, model.decoder.net[0].weight)
    with pytest.raises(AAEError, match=r"elsewhere: no such checkpoint \(give a run folder or a \.pt file\)"):
        load_model(tmp_path / "elsewhere")
    with pytest.raises(AAEError, match=r"no such checkpoint in this folder \(checkpoints/latest.pt\): not a "
                                       r"run folder, or a run stopped before its first checkpoint"):
        load_model(tmp_path)  # a folder without checkpoints/latest.pt


def test_load_model_with_a_custom_prior(tmp_path):
    class Box:
        dim = 2

        def sample(self, n, labels=None):
            return torch.rand(n, 2)

    save_model(tiny_model(prior=Box()), tmp_path / "m.pt")
    with pytest.raises(AAEError, match=r"custom prior, a Python object: pass it from Python, as load_model\(run, prior=...\)"):
        load_model(tmp_path / "m.pt")
    assert isinstance(load_model(tmp_path / "m.pt", prior=Box()).prior, Box)
    save_model(tiny_model(), tmp_path / "g.pt")
    with pytest.raises(AAEError, match="the model's prior is built from its arguments"):
        load_model(tmp_path / "g.pt", prior=Box())


@pytest.mark.parametrize(
    "prior, recorded",
    [
        (GaussianPrior(2, 3.0), {"prior": "gaussian", "prior_std": 3.0}),
        (UniformPrior(2, 2.5), {"prior": "uniform", "prior_scale": 2.5}),
        (MixturePrior(6, 2.0, 0.4, 0.1), {"prior": "mixture", "prior_scale": 2.0, "prior_components": 6,
                                          "prior_std_along": 0.4, "prior_std_across": 0.1}),
        (SwissRollPrior(5, 4.0, width=0.2), {"prior": "swiss-roll", "prior_scale": 4.0,
                                             "prior_components": 5, "prior_std_across": 0.2}),
    ],
    ids=["gaussian", "uniform", "mixture", "swiss-roll"],
)
def test_a_built_in_prior_object_is_recorded_by_name_and_reloads_without_it(prior, recorded, tmp_path):
    """It was recorded as "custom" with the Gaussian's default std: reloading asked for the object,
    and config.json gave other parameters than those trained with."""
    model = tiny_model(prior=prior)
    assert recorded.items() <= model.model_args.items()
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert repr(loaded.prior) == repr(prior)
    torch.manual_seed(0)
    expected = prior.sample(50)
    torch.manual_seed(0)
    assert torch.equal(loaded.prior.sample(50), expected)
    with pytest.raises(AAEError, match="the model's prior is built from its arguments"):
        load_model(tmp_path / "m.pt", prior=prior)


def test_a_run_that_recorded_a_built_in_prior_object_as_custom_still_resumes(mnist, tmp_path):
    """Runs trained before built-in prior objects were recorded by name hold "custom" and the
    prior_std argument: the same object resumes them (refused as another prior, without this)."""
    data, run = subset_of(mnist, 100, 50), tmp_path / "run"
    old = tiny_model(prior=GaussianPrior(2, 3.0))
    old.model_args = old.model_args_before  # as earlier versions recorded it
    assert old.model_args["prior"] == "custom" and old.model_args["prior_std"] == 5.0
    fit(old, data, tiny_train(epochs=1, batch_size=50), out=run, progress=False)
    summary = fit(tiny_model(prior=GaussianPrior(2, 3.0)), data, tiny_train(epochs=2, batch_size=50), out=run,
                  resume=True, progress=False)  # fmt: skip
    assert summary["epochs"] == 2
    assert json.loads((run / "config.json").read_text())["model"]["prior"] == "custom"
    # (As before, a "custom" record cannot tell which object it was: any prior of the dim resumes it.)
    fresh = tmp_path / "fresh"
    fit(tiny_model(prior=GaussianPrior(2, 3.0)), data, tiny_train(epochs=1, batch_size=50), out=fresh, progress=False)
    assert json.loads((fresh / "config.json").read_text())["model"]["prior"] == "gaussian"  # new runs: by name


def test_a_swiss_roll_of_other_turns_stays_a_custom_prior():
    """make_prior's swiss roll has 2 turns: one of 3 cannot be rebuilt from the recorded fields."""
    assert tiny_model(prior=SwissRollPrior(turns=3.0)).model_args["prior"] == "custom"


class _Prior:
    def __init__(self, dim=2, rows=0, kind="tensor"):
        self.dim, self.rows, self.kind = dim, rows, kind

    def sample(self, n, labels=None):
        x = torch.randn(n + self.rows, 2)
        return {"tensor": x, "numpy": x.numpy(), "float64": x.double(), "grad": x.requires_grad_()}[self.kind]


@pytest.mark.parametrize(
    "prior, fragment",
    [
        (_Prior(dim=3), "dim 3, the model's z_dim 2"),
        (42, "no sample(n, labels=None) method"),
        (_Prior(rows=1), "sample(50) gave a torch.float32 tensor of shape (51, 2); expected a float32 tensor (50, 2)"),
        (_Prior(kind="numpy"), "sample(50) gave a ndarray"),
        (_Prior(kind="float64"), "sample(50) gave a torch.float64 tensor"),
        # crashed after training, in the plots, leaving no summary.json
        (_Prior(kind="grad"), "sample(50) gave a tensor that requires grad; a prior's samples are data"),
    ],
)
def test_a_custom_prior_is_refused_with_a_clear_error(prior, fragment, mnist):
    """Its `dim` and `sample` when the model is built; what `sample` gives at the first draw."""
    with pytest.raises(AAEError) as err:
        fit(tiny_model(prior=prior), subset_of(mnist, 100, 50), tiny_train(), progress=False)
    assert fragment in str(err.value)
    with pytest.raises(AAEError, match="sample"):
        model = tiny_model(prior=_Prior(rows=1))
        model.sample(4)


def test_load_model_with_unknown_model_args_is_an_aae_error(tmp_path):
    model = tiny_model()
    payload = {"model_kind": "unsupervised", "model_args": {**model.model_args, "future": 1},
               "config": {}, "networks": model.state_dict()}  # fmt: skip
    ck.save_checkpoint(tmp_path / "m.pt", payload, {})
    with pytest.raises(AAEError, match=r"m\.pt: its model arguments do not fit this version \(.*'future'\)"):
        load_model(tmp_path / "m.pt")


# ----------------------------------------------------------------------------------------------
# load_checkpoint on bad files


@pytest.fixture
def good_checkpoint_bytes(tmp_path) -> bytes:
    save_model(tiny_model(hidden=8, disc_hidden=8), tmp_path / "good.pt")
    return (tmp_path / "good.pt").read_bytes()


@pytest.mark.parametrize("cut", [0, 1, 10, 0.5, -10, -1])
def test_truncated_checkpoint(tmp_path, good_checkpoint_bytes, cut):
    raw = good_checkpoint_bytes
    n = int(len(raw) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(raw) + cut)
    path = tmp_path / "latest.pt"
    path.write_bytes(raw[:n])
    with pytest.raises(AAEError, match=DAMAGED):
        load_checkpoint(path)


# What a damaged file may be called (any error naming it but "no such checkpoint").
DAMAGED = (r"latest\.pt: (not a readable checkpoint|not a checkpoint|not a torch-aae checkpoint|damaged|"
           r"refused to load|checkpoint lacks|checkpoint format)")


def _corrupted(raw: bytes, start: int, values) -> bytes:
    out = bytearray(raw)
    out[start : start + len(values)] = bytes(values)
    return bytes(out)


def _pickle_span(raw: bytes) -> tuple[int, int]:
    """Where the checkpoint's pickle (archive/data.pkl, the zip's first member) lies."""
    start = raw.index(b"\x80\x02")  # PROTO 2, torch.save's pickle protocol
    return start, raw.index(b"PK", start)


@pytest.mark.parametrize("offset", [2, 10, 50])
def test_checkpoint_with_corrupt_pickle(tmp_path, good_checkpoint_bytes, offset):
    start, _ = _pickle_span(good_checkpoint_bytes)
    path = tmp_path / "latest.pt"
    path.write_bytes(_corrupted(good_checkpoint_bytes, start + offset, [0xFF] * 16))
    with pytest.raises(AAEError, match=DAMAGED):
        load_checkpoint(path)


def test_a_changed_byte_inside_a_tensor_is_found_by_its_crc(tmp_path, good_checkpoint_bytes):
    # torch.load itself loads such a file, with the changed value in the tensor.
    raw = good_checkpoint_bytes
    _, pickle_end = _pickle_span(raw)
    pos = pickle_end + (len(raw) - pickle_end) // 2  # inside the tensors' records
    path = tmp_path / "latest.pt"
    path.write_bytes(_corrupted(raw, pos, [raw[pos] ^ 0x10]))
    assert isinstance(torch.load(path, weights_only=True), dict)
    with pytest.raises(AAEError, match=r"latest.pt: damaged: its record \S+/data/\d+ does not match its CRC-32"):
        load_checkpoint(path)


def test_any_single_byte_change_in_the_pickle_is_an_aae_error(tmp_path, good_checkpoint_bytes):
    start, end = _pickle_span(good_checkpoint_bytes)
    rng = np.random.default_rng(0)
    path = tmp_path / "latest.pt"
    for _ in range(150):
        pos, value = int(rng.integers(start, end)), int(rng.integers(0, 256))
        if value == good_checkpoint_bytes[pos]:
            continue
        path.write_bytes(_corrupted(good_checkpoint_bytes, pos, [value]))
        with pytest.raises(AAEError, match=DAMAGED):
            load_checkpoint(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2, 3], "no format_version"),
        ({"networks": {}}, "no format_version"),
        ({"format_version": 99, "model_kind": "unsupervised"}, "checkpoint format 99"),
        ({"format_version": 1, "model_kind": "unsupervised", "model_args": {}, "config": {}},
         "lacks 'networks'"),  # fmt: skip
    ],
)
def test_not_a_torch_aae_checkpoint(tmp_path, obj, message):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(AAEError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(AAEError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


class MakesAFile:
    """Unpickling this creates `path` (through os.system, as an attacker's payload would)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


@pytest.mark.parametrize("container", ["torch.save", "raw-pickle"])
def test_checkpoint_that_would_run_code_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = {"format_version": 1, "model_kind": "unsupervised", "model_args": {}, "config": {},
               "networks": {}, "evil": MakesAFile(marker)}  # fmt: skip
    path = tmp_path / "latest.pt"
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # Control: unsafe loading really does run the payload.
    if container == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    with pytest.raises(AAEError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(AAEError, match="refused to load"):
        load_model(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Incompatible models


def test_load_state_shape_mismatch():
    saved = tiny_model(z_dim=2).state_dict()
    with pytest.raises(AAEError, match="does not fit the model's networks.*size mismatch"):
        load_state(tiny_model(z_dim=3), saved, "networks")
    with pytest.raises(AAEError, match="does not fit"):
        load_state(tiny_model(depth=3), saved, "networks")  # missing keys
    model = tiny_model(z_dim=3)
    load_state(model, tiny_model(seed=9, z_dim=3).state_dict(), "networks")  # fits: no error
    assert torch.equal(model.encoder.net[0].weight, tiny_model(seed=9, z_dim=3).encoder.net[0].weight)


def test_check_compatible():
    model = tiny_model(z_dim=2)
    ckpt = {"model_kind": "unsupervised", "model_args": dict(model.model_args)}
    check_compatible(ckpt, model)  # same model: fine
    with pytest.raises(AAEError, match=r"differs.*'z_dim': \(2, 3\)"):
        check_compatible(ckpt, tiny_model(z_dim=3))
    with pytest.raises(AAEError, match="the checkpoint's model is supervised, not unsupervised"):
        check_compatible({**ckpt, "model_kind": "supervised"}, model)


# ----------------------------------------------------------------------------------------------
# Atomic writes and RNG state


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    ck.atomic_write_json(path, {"a": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(OSError) as err:
        ck.atomic_write_json(tmp_path / "summary.json", {"a": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_the_mode_of_an_ordinary_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        ck.atomic_write_json(tmp_path / "a.json", {"a": 1})
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o640  # what open() itself gives
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}


def test_rng_state_survives_a_safe_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = ck.rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    ck.set_rng_state(torch.load(buf, weights_only=True))
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


# ----------------------------------------------------------------------------------------------
# Run folders


def test_existing_run_folder_needs_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    with pytest.raises(AAEError, match="already holds a run; pass --resume .* or --overwrite"):
        RunFolder(run)
    assert (run / "summary.json").read_text() == "{}"
    RunFolder(tmp_path / "new").close()  # a new or empty folder is fine
    (tmp_path / "empty").mkdir()
    RunFolder(tmp_path / "empty").close()


def test_retry_after_a_run_that_failed_at_once(tmp_path, monkeypatch):
    from conftest import synthetic_dataset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = synthetic_dataset(20, shape=(4, 4))
    model = tiny_model(in_dim=16, image_shape=(4, 4))
    with pytest.raises(AAEError, match="CUDA is not available"):
        fit(model, data, tiny_train(device="cuda", batch_size=20), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the folder was made
    fit(model, data, tiny_train(device="cpu", batch_size=20), out=tmp_path / "run", progress=False)


def test_overwrite_replaces_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "plots" / "old.png").write_bytes(b"x")
    (run / "config.json").write_text("{}")
    (run / "eval.json").write_text("{}")
    (run / ".summary.json.0a1b2c3d.tmp").write_text("x")  # a killed write's temporary file
    (run / ".DS_Store").write_text("x")  # a file browser's: refused the overwrite before
    folder = RunFolder(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
    folder.close()


def test_overwrite_removes_a_link_in_the_run_not_what_it_points_to(tmp_path):
    """A run's tensorboard/ linked to a shared folder: --overwrite failed with "Cannot call
    rmtree on a symbolic link" halfway, after deleting part of the run."""
    run, shared = tmp_path / "run", tmp_path / "shared_tb"
    (shared / "run").mkdir(parents=True)
    (shared / "run" / "events.out").write_text("x")
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    (run / "tensorboard").symlink_to(shared / "run", target_is_directory=True)
    folder = RunFolder(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
    assert (shared / "run" / "events.out").read_text() == "x"  # the link's target is not the run's
    folder.close()


@pytest.mark.parametrize("foreign", ["mydata.npz", "notes.txt", "branch/config.json"])
def test_overwrite_deletes_nothing_that_a_run_does_not_write(tmp_path, foreign):
    """It deleted a dataset kept in the run folder (and trained on it first), a user's notes, a
    run branched into a subfolder: now refused before anything is loaded, and nothing goes."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / foreign).parent.mkdir(parents=True, exist_ok=True)
    (run / foreign).write_text("mine")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    top = foreign.split("/")[0]
    with pytest.raises(AAEError, match=rf"--overwrite: .*run also holds files that a run does not write \({top}\); "
                                       r"move them out first, or give another --out"):
        RunFolder(run, overwrite=True)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_a_broken_link_as_out_is_named_before_anything_loads(tmp_path, capsys):
    """`aae train` and `aae bench` failed with "File exists: broken" when making the folder,
    after the data had loaded."""
    from torch_aae import cli

    (tmp_path / "broken").symlink_to("gone", target_is_directory=True)  # relative to its folder
    message = (f"aae: error: --out {tmp_path / 'broken'} is a symbolic link to {tmp_path / 'gone'}, which "
               "does not exist: give another --out, or remove the link\n")
    for argv in (["train", "unsupervised"], ["bench", "clustering"]):  # no data here: refused before it loads
        assert cli.main([*argv, "--out", str(tmp_path / "broken"), "--data-dir", str(tmp_path / "nowhere")]) == 1
        assert capsys.readouterr().err == message, argv
    (tmp_path / "gone").mkdir()  # made: the link is a new run's folder
    assert RunFolder.check(tmp_path / "broken", resume=False, overwrite=False) is False


def test_a_folder_holding_only_a_file_browsers_litter_is_new(tmp_path):
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / ".DS_Store").write_text("x")  # a folder opened in Finder: refused as "not empty" before
    assert RunFolder.check(folder, resume=False, overwrite=False) is False


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_holds_no_run_is_never_emptied(tmp_path, overwrite):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(AAEError, match="is not empty and holds no run .*config.json.*new or empty folder"):
        RunFolder(folder, overwrite=overwrite)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sub"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_an_empty_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" would be this folder
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AAEError, match="--out is empty"):
        RunFolder("", overwrite=True)
    assert (tmp_path / "config.json").exists()


@pytest.mark.parametrize("make", [False, True], ids=["no-folder", "folder-without-checkpoint"])
def test_resume_without_checkpoint(tmp_path, make):
    run = tmp_path / "run"
    if make:
        (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(AAEError, match="--resume: no checkpoint at"):
        RunFolder(run, resume=True)
    assert run.exists() == make


def test_resume_and_overwrite_contradict(tmp_path):
    with pytest.raises(AAEError, match="contradict"):
        RunFolder(tmp_path / "run", resume=True, overwrite=True)


def test_locked_run_folder(tmp_path):
    run = tmp_path / "run"
    first = RunFolder(run)
    (run / "config.json").write_text("{}")
    (run / "eval.json").write_text("x")
    try:
        with pytest.raises(AAEError, match="in use by another training process"):
            RunFolder(run, overwrite=True)
        assert (run / "eval.json").exists()  # the refused overwrite deleted nothing
        save_model(tiny_model(), run / CHECKPOINT)
        with pytest.raises(AAEError, match="in use"):
            RunFolder(run, resume=True)
    finally:
        first.close()
    RunFolder(run, resume=True).close()  # unlocked now


# ----------------------------------------------------------------------------------------------
# Resuming


@pytest.fixture(scope="module")
def resume_data(mnist):
    return subset_of(mnist, 200, 100)  # batch 50: 4 steps per epoch


def _fit(data, run, epochs, resume=False, dropout=0.0, seed=3, **train):
    model = tiny_model(seed=seed, dropout=dropout)
    summary = fit(model, data, tiny_train(epochs=epochs, seed=seed, **train), out=run, resume=resume,
                  progress=False)  # fmt: skip
    return model, summary


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_continues_the_history(tmp_path, resume_data, capsys):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=2)
    first_two = _history(run)
    assert [r["epoch"] for r in first_two] == [1, 2]
    _, summary = _fit(resume_data, run, epochs=3, resume=True)
    history = _history(run)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[:2] == first_two
    assert summary["epochs"] == 3
    # The throughput counts the images of all 3 epochs over the time of all 3 (both restored);
    # it is of the unrounded time, train_seconds is rounded to 1 ms (a few % of this short run).
    seconds = summary["train_seconds"]
    assert 600 / (seconds + 5e-4) - 0.1 <= summary["samples_per_second"] <= 600 / max(seconds - 5e-4, 1e-9) + 0.1
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"], meta["batch_in_epoch"]) == (3, 12, 0)
    # Resuming a finished run trains nothing more, and says so.
    _, again = _fit(resume_data, run, epochs=3, resume=True)
    assert again["epochs"] == 3 and len(_history(run)) == 3
    assert "already trained 3 epochs; evaluating only" in capsys.readouterr().err


def test_resume_rewrites_config_json_and_logs_what_changed(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=2)
    first = json.loads((run / "config.json").read_text())
    assert first["train"]["epochs"] == 2 and not (run / "resumes.jsonl").exists()
    _fit(resume_data, run, epochs=3, resume=True, lr_step=2)
    config = json.loads((run / "config.json").read_text())
    assert (config["train"]["epochs"], config["train"]["lr_step"]) == (3, 2)
    assert {k: v for k, v in config.items() if k != "train"} == {k: v for k, v in first.items() if k != "train"}
    (line,) = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert (line["epoch"], line["step"]) == (2, 8)
    assert line["changed"] == {"train.epochs": [2, 3], "train.lr_step": [first["train"]["lr_step"], 2]}
    # A resume that changes nothing is logged, and leaves config.json as it is.
    _fit(resume_data, run, epochs=3, resume=True, lr_step=2)
    lines = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["changed"] == {} and lines[1]["epoch"] == 3
    assert json.loads((run / "config.json").read_text()) == config


@pytest.mark.parametrize(
    "dropout",
    [
        0.0,
        0.2,
    ],
)
def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path, resume_data, dropout):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=2, dropout=dropout)
    resumed, _ = _fit(resume_data, run, epochs=3, resume=True, dropout=dropout)
    straight, _ = _fit(resume_data, None, epochs=3, dropout=dropout)
    _assert_same_weights(resumed, straight)
    # ... and the comparison can fail: one epoch fewer gives other weights.
    two, _ = _fit(resume_data, None, epochs=2, dropout=dropout)
    assert not torch.equal(two.encoder.net[0].weight, straight.encoder.net[0].weight)


@pytest.fixture
def sigint_not_ignored():
    """pytest run as a background job starts with SIGINT ignored, and training then (rightly)
    leaves it so: give this test Python's usual Ctrl-C handler, and restore what was there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_epoch_then_resume_is_bitwise_equal(tmp_path, resume_data, monkeypatch, signum,
                                                          sigint_not_ignored):  # fmt: skip
    original, calls = unsupervised.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        out = original(*args, **kwargs)
        if len(calls) == 6:  # epoch 2, its second batch: the signal arrives in the middle of a step
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(unsupervised, "train_step", interrupted_step)
    run = tmp_path / "run"
    # resume_data is built in Python (subset_of): the command line could not load it again.
    with pytest.raises(Interrupted, match=r"interrupted at epoch 2, step 6; continue with fit\(model, data, "
                                          r"out='.*run', resume=True\) and the same Dataset"):  # fmt: skip
        model = tiny_model(seed=3)
        fit(model, resume_data, tiny_train(epochs=3, seed=3), out=run, progress=False)
    assert not model.training  # in eval mode, as after a finished fit (a notebook encodes with it next)
    monkeypatch.setattr(unsupervised, "train_step", original)
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"], meta["batch_in_epoch"]) == (1, 6, 2)
    assert len(_history(run)) == 1

    resumed, _ = _fit(resume_data, run, epochs=3, resume=True)
    straight, _ = _fit(resume_data, tmp_path / "straight", epochs=3)
    _assert_same_weights(resumed, straight)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(_history(run)) == strip(_history(tmp_path / "straight"))


def test_a_second_signal_inside_a_step_keeps_the_previous_checkpoint(tmp_path, resume_data, monkeypatch):
    original, calls = unsupervised.train_step, []

    def half_done_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt  # what the second Ctrl-C raises, wherever the step is
        return original(*args, **kwargs)

    monkeypatch.setattr(unsupervised, "train_step", half_done_step)
    run = tmp_path / "run"
    with pytest.raises(AAEError, match=r"stopped in the middle of step 6; the checkpoint of step 4 is kept"):
        _fit(resume_data, run, epochs=3)
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"]) == (1, 4)


def test_a_signal_after_a_soft_stop_is_not_a_second_signal(tmp_path, resume_data, monkeypatch):
    # A parallel bench's worker under a process-group SIGTERM: the main process's request
    # (SOFT_STOP) and the worker's own SIGTERM arrive in the same step; it stops at the step's end.
    original, calls = unsupervised.train_step, []

    def both_in_one_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            stopping.SOFT_STOP.set()
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(unsupervised, "train_step", both_in_one_step)
    try:
        with pytest.raises(Interrupted, match=r"interrupted at epoch 2, step 6;"):
            _fit(resume_data, tmp_path / "run", epochs=3)
    finally:
        stopping.SOFT_STOP.clear()
    meta = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"]) == (1, 6)


def test_a_bench_workers_sigterm_never_stops_it_mid_step(tmp_path, resume_data, monkeypatch):
    # In a bench worker SIGTERM sets SOFT_STOP (its own signal, then the pool's terminate(), may
    # both arrive), also outside training, and training leaves that handler in place.
    original, calls = unsupervised.train_step, []

    def two_sigterms(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(unsupervised, "train_step", two_sigterms)
    previous = signal.signal(signal.SIGTERM, stopping.soft_stop_handler)
    try:
        with pytest.raises(Interrupted, match=r"interrupted at epoch 2, step 6;"):
            _fit(resume_data, tmp_path / "run", epochs=3)
        assert signal.getsignal(signal.SIGTERM) is stopping.soft_stop_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        stopping.SOFT_STOP.clear()


def test_checkpoint_every_n_steps(tmp_path, resume_data, monkeypatch):
    saved = []
    original = ck.save_checkpoint

    def recording_save(path, payload, meta):
        saved.append((meta["epoch"], meta["step"], meta["batch_in_epoch"]))
        original(path, payload, meta)

    monkeypatch.setattr("torch_aae.train.save_checkpoint", recording_save)
    _fit(resume_data, tmp_path / "run", epochs=2, checkpoint_every=3)
    # Every 3 steps (3, 6) within epochs, plus at each epoch's end (steps 4, 8).
    assert saved == [(0, 3, 3), (1, 4, 0), (1, 6, 2), (2, 8, 0)]
    # Every 2 steps: an epoch's last step is saved once, by the epoch-end checkpoint.
    saved.clear()
    _fit(resume_data, tmp_path / "run2", epochs=2, checkpoint_every=2)
    assert saved == [(0, 2, 2), (1, 4, 0), (1, 6, 2), (2, 8, 0)]


def test_checkpoint_every_n_epochs_and_at_the_last(tmp_path, resume_data, monkeypatch):
    saved = []
    original = ck.save_checkpoint

    def recording_save(path, payload, meta):
        saved.append(meta["epoch"])
        original(path, payload, meta)

    monkeypatch.setattr("torch_aae.train.save_checkpoint", recording_save)
    _fit(resume_data, tmp_path / "run", epochs=5, checkpoint_epochs=2)
    assert saved == [2, 4, 5]
    # Resuming continues from the last checkpoint written.
    _fit(resume_data, tmp_path / "run", epochs=6, checkpoint_epochs=2, resume=True)
    assert saved == [2, 4, 5, 6] and len(_history(tmp_path / "run")) == 6


def test_kept_checkpoints_are_those_of_the_checkpointed_epochs_each_of_its_own_epoch(tmp_path, monkeypatch):
    # --keep-checkpoints with --checkpoint-epochs 2: epochs 2 and 4 are checkpointed; epoch 3
    # has none, and no epoch-0003.pt may hold epoch 2's checkpoint under epoch 3's name.
    monkeypatch.setattr("torch_aae.train.make_plots", lambda *args: [])  # (the plots are not in question)
    run = tmp_path / "run"
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), synthetic_dataset(40, shape=(4, 4), test=10),
        tiny_train(epochs=4, batch_size=20, checkpoint_epochs=2, keep_checkpoints=True), out=run, progress=False)  # fmt: skip
    kept = sorted(p.name for p in (run / "checkpoints").glob("epoch-*.pt"))
    assert kept == ["epoch-0002.pt", "epoch-0004.pt"]
    for name in kept:
        assert load_checkpoint(run / "checkpoints" / name)["state"]["epoch"] == int(name[6:10])


def test_kept_checkpoints_and_a_branch_that_continues_under_another_schedule(tmp_path, resume_data):
    """--keep-checkpoints keeps each epoch's checkpoint; a run branched from the one after epoch 2
    with another learning-rate step ends bitwise equal to a run trained under that schedule
    from the start (the two schedules agree over the first two epochs)."""
    a = tmp_path / "a"
    _fit(resume_data, a, epochs=3, lr_step=3, dropout=0.2, keep_checkpoints=True)
    ckpts = a / "checkpoints"
    kept = sorted(p.name for p in ckpts.glob("epoch-*.pt"))
    assert kept == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]
    assert (ckpts / "epoch-0003.pt").read_bytes() == (ckpts / "latest.pt").read_bytes()
    assert load_checkpoint(ckpts / "epoch-0001.pt")["state"]["epoch"] == 1  # not overwritten since

    def branch(source, out):
        model = tiny_model(seed=3, dropout=0.2)
        fit(model, resume_data, tiny_train(epochs=4, seed=3, lr_step=2), out=out, progress=False,
            branch_from=source)  # fmt: skip
        return model

    b = tmp_path / "b"
    branched = branch(ckpts / "epoch-0002.pt", b)
    straight, _ = _fit(resume_data, None, epochs=4, lr_step=2, dropout=0.2)
    _assert_same_weights(branched, straight)
    history = _history(b)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and history[:2] == _history(a)[:2]
    (line,) = [json.loads(x) for x in (b / "resumes.jsonl").read_text().splitlines()]
    assert line["branched_from"] == str((ckpts / "epoch-0002.pt").resolve())
    assert (line["epoch"], line["step"]) == (2, 8)
    assert line["changed"] == {"train.epochs": [3, 4], "train.lr_step": [3, 2],
                               "train.keep_checkpoints": [True, False]}  # fmt: skip
    assert json.loads((b / "config.json").read_text())["train"]["lr_step"] == 2
    assert not list((b / "checkpoints").glob("epoch-*.pt"))  # b does not keep them
    # ... and the comparison can fail: after epoch 3 the schedules have parted.
    late = branch(ckpts / "epoch-0003.pt", tmp_path / "c")
    assert not torch.equal(late.encoder.net[0].weight, straight.encoder.net[0].weight)


def test_a_branch_into_the_folder_of_its_checkpoint_is_refused(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=1)
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(AAEError, match="the checkpoint is inside --out"):
        fit(tiny_model(seed=3), resume_data, tiny_train(epochs=2, seed=3), out=run, overwrite=True,
            progress=False, branch_from=run / "checkpoints" / "latest.pt")  # fmt: skip
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before
    with pytest.raises(AAEError, match="pick one"):
        fit(tiny_model(seed=3), resume_data, tiny_train(epochs=2, seed=3), out=tmp_path / "new",
            resume=True, progress=False, branch_from=run / "checkpoints" / "latest.pt")  # fmt: skip


@pytest.mark.parametrize("change", [{"lr_recon": 5e-2}, {"beta1_reg": 0.1}, {"batch_size": 25}])
def test_a_branch_under_other_learning_rates_is_refused(tmp_path, resume_data, change):
    # The optimizers' saved states carry the source run's rates and betas: a branch under new
    # ones would train at the old while its config.json recorded the new. The CLI refuses them.
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=1)
    name, value = next(iter(change.items()))
    with pytest.raises(AAEError, match=rf"branch_from: {run / 'checkpoints' / 'latest.pt'}'s run was made "
                                       rf"with train\.{name}=.*, not {value}; start a new run"):  # fmt: skip
        fit(tiny_model(seed=3), resume_data, tiny_train(epochs=2, seed=3, **change), out=tmp_path / "b",
            progress=False, branch_from=run / "checkpoints" / "latest.pt")  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_resume_or_branch_with_fewer_epochs_than_trained_is_refused(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=2, keep_checkpoints=True)
    config, history = (run / "config.json").read_text(), _history(run)
    with pytest.raises(AAEError, match="--resume: --epochs 1, but the checkpoint has trained 2 epochs; "
                                       "give --epochs 2 or more"):  # fmt: skip
        _fit(resume_data, run, epochs=1, resume=True)
    assert (run / "config.json").read_text() == config and _history(run) == history
    assert not (run / "resumes.jsonl").exists()
    with pytest.raises(AAEError, match="--branch-from: --epochs 1, but the checkpoint has trained 2"):
        fit(tiny_model(seed=3), resume_data, tiny_train(epochs=1, seed=3), out=tmp_path / "b",
            progress=False, branch_from=run / "checkpoints" / "epoch-0002.pt")  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_inside_an_epoch_counts_that_epoch(tmp_path, resume_data, monkeypatch):
    from torch_aae import train as train_module

    mid = tmp_path / "mid"  # stopped after step 6: epoch 1 done, and 2 of epoch 2's 4 steps
    monkeypatch.setattr(train_module, "_stop_now", lambda stop, step, *a, **k: step == 6)
    with pytest.raises(AAEError, match="interrupted at epoch 2, step 6"):
        _fit(resume_data, mid, epochs=3)
    with pytest.raises(AAEError, match="trained 1 epochs and 2 steps of the next; give --epochs 2 or more"):
        _fit(resume_data, mid, epochs=1, resume=True)
    _fit(resume_data, mid, epochs=2, resume=True)
    assert [r["epoch"] for r in _history(mid)] == [1, 2]


def test_resume_with_a_different_model_is_refused(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=1)
    model = tiny_model(z_dim=3)
    with pytest.raises(AAEError, match=r"resume: the run was made with model.z_dim=2, not 3"):
        fit(model, resume_data, tiny_train(epochs=2), out=run, resume=True, progress=False)
    assert len(_history(run)) == 1  # nothing was trained or written
    # The failed attempt released the folder's lock.
    RunFolder(run, resume=True).close()


def test_fit_on_a_locked_run_folder(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=1)
    holder = RunFolder(run, resume=True)
    try:
        with pytest.raises(AAEError, match="in use"):
            _fit(resume_data, run, epochs=2, resume=True)
    finally:
        holder.close()


def test_fit_into_an_existing_run_without_flags(tmp_path, resume_data):
    run = tmp_path / "run"
    _fit(resume_data, run, epochs=1)
    with pytest.raises(AAEError, match="already holds a run"):
        _fit(resume_data, run, epochs=1)


def test_resume_without_run_folder_is_an_aae_error(resume_data):
    with pytest.raises(AAEError, match=r"resume needs the run folder to resume from \(out=\.\.\.\)"):
        fit(tiny_model(), resume_data, tiny_train(), out=None, resume=True, progress=False)


def test_a_run_with_a_summary_has_its_plots(tmp_path, resume_data, monkeypatch):
    # summary.json is written after the plots: a bench takes a seed with a summary as finished,
    # so a run stopped while plotting must not have one; its resume plots and summarizes.
    import torch_aae.train as train_module

    def plots_interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    original = train_module.make_plots
    monkeypatch.setattr(train_module, "make_plots", plots_interrupted)
    with pytest.raises(Interrupted, match="interrupted in the final evaluation; the training is finished"):
        _fit(resume_data, run, epochs=1)
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(train_module, "make_plots", original)
    _fit(resume_data, run, epochs=1, resume=True)
    assert (run / "summary.json").is_file() and (run / "plots" / "losses.png").is_file()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_in_the_final_evaluation_says_training_is_done_and_resume_finishes_it(mnist, tmp_path, monkeypatch, how):
    """Ctrl-C there printed `aae: interrupted` alone, and SIGTERM killed the process without a
    word (exit 143): neither said the training was finished, nor how to get its summary."""
    data = subset_of(mnist, 100, 50)
    run = tmp_path / "run"
    evaluate = unsupervised.evaluate

    def stopped(*args):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt  # (after a SIGTERM, raised by its handler before this line)

    monkeypatch.setattr(unsupervised, "evaluate", stopped)
    with pytest.raises(Interrupted, match=r"interrupted in the final evaluation; the training is finished and its last "
                                          r"checkpoint written; fit\(model, data, out='.*run', resume=True\) and the same "
                                          r"Dataset evaluates it and writes summary.json"):
        fit(tiny_model(), data, tiny_train(epochs=1, batch_size=50), out=run, progress=False)
    assert not (run / "summary.json").exists() and (run / CHECKPOINT).is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after it
    monkeypatch.setattr(unsupervised, "evaluate", evaluate)
    summary = fit(tiny_model(), data, tiny_train(epochs=1, batch_size=50), out=run, resume=True, progress=False)
    assert json.loads((run / "summary.json").read_text())["test_recon_bce"] == summary["test_recon_bce"]


def test_a_stop_in_the_final_evaluation_without_a_run_folder_claims_no_checkpoint(mnist, monkeypatch):
    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(unsupervised, "evaluate", stopped)
    with pytest.raises(Interrupted) as err:
        fit(tiny_model(), subset_of(mnist, 100, 50), tiny_train(epochs=1, batch_size=50), progress=False)
    assert str(err.value) == "interrupted in the final evaluation; the training is finished"
