"""`aae encode` and `encode_run` / `encode_images`: the codes of a run's images, written to a .npz."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from torch_aae import cli, encode_images, encode_run, load_dataset, load_model
from torch_aae.errors import AAEError

TINY = ("--hidden", "32", "--disc-hidden", "32", "--no-progress", "--data-dir", str(REPO_ROOT / "data"))


def _train(root, kind, *flags):
    run = root / kind
    assert cli.main(["train", kind, "--subset", "300", "--epochs", "1", *TINY, *flags, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def semi(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("encode"), "semi-supervised", "--labels", "100", "--val-size", "100")


def _encode(capsys, *argv) -> dict:
    assert cli.main(["encode", *map(str, argv)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.splitlines()[-1]  # after what a training of the test printed
    path = argv[argv.index("--out") + 1]
    assert out.startswith(f"wrote {path}: z (")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_the_test_codes_of_a_semi_supervised_run_score_its_test_error(semi, tmp_path, capsys):
    codes = _encode(capsys, semi, "--out", tmp_path / "codes.npz")
    assert sorted(codes) == ["labels", "pred", "probs", "z"]
    assert codes["z"].shape == (10000, 10) and codes["z"].dtype == np.float32
    assert codes["probs"].shape == (10000, 10)
    np.testing.assert_allclose(codes["probs"].sum(1), 1, atol=1e-5)
    assert (codes["pred"] == codes["probs"].argmax(1)).all()
    assert (codes["labels"] == load_dataset("mnist", REPO_ROOT / "data").test_y.numpy()).all()
    # The training's own evaluation scored the same checkpoint on the same images.
    summary = json.loads((semi / "summary.json").read_text())
    assert (codes["pred"] != codes["labels"]).mean() == pytest.approx(summary["test_error"], abs=1e-6)  # one image is 1e-4


def test_the_validation_codes_are_those_the_last_epoch_scored(semi, tmp_path, capsys):
    codes = _encode(capsys, semi, "--split", "val", "--out", tmp_path / "sub" / "val.npz")
    assert codes["z"].shape == (100, 10)
    last = [json.loads(line) for line in (semi / "metrics.jsonl").read_text().splitlines()][-1]
    assert (codes["pred"] != codes["labels"]).mean() == pytest.approx(last["eval/val_error"], abs=1e-6)  # one image is 1e-2
    api = encode_run(semi, "val")
    assert sorted(api) == sorted(codes)
    for key, value in api.items():
        np.testing.assert_array_equal(value.numpy(), codes[key])
    train = _encode(capsys, semi, "--split", "train", "--out", tmp_path / "train.npz")
    assert len(train["z"]) == 300  # --subset: the first 300 images left after the validation split


def test_images_of_a_file_get_the_codes_of_the_same_images_in_the_run(semi, tmp_path, capsys):
    test = _encode(capsys, semi, "--out", tmp_path / "test.npz")
    x = load_dataset("mnist", REPO_ROOT / "data").test_x[:7]
    np.savez(tmp_path / "mine.npz", x=x.reshape(7, 28, 28).numpy(), y=np.array([5, 5, 1, 1, 1, 0, 9]))
    for run in (semi, semi / "checkpoints" / "latest.pt"):
        mine = _encode(capsys, run, "--images", tmp_path / "mine.npz", "--overwrite", "--out", tmp_path / "mine-codes.npz")
        assert mine["labels"].tolist() == [5, 5, 1, 1, 1, 0, 9]  # any classes, as given
        for key in ("z", "probs", "pred"):
            np.testing.assert_allclose(mine[key], test[key][:7], atol=1e-5)


def test_dim_reduction_codes_hold_the_representation(tmp_path, capsys):
    run = _train(tmp_path, "dim-reduction", "--clusters", "6")
    codes = _encode(capsys, run, "--out", tmp_path / "codes.npz")
    assert sorted(codes) == ["labels", "pred", "probs", "representation", "z"]
    assert codes["probs"].shape == (10000, 6) and codes["z"].shape == (10000, 2)
    heads = load_model(run).heads.detach().numpy()  # (6, 2)
    np.testing.assert_allclose(codes["representation"], codes["probs"] @ heads + codes["z"], atol=1e-4)


def test_unsupervised_codes_are_the_encoders(tmp_path, capsys):
    run = _train(tmp_path, "unsupervised")
    codes = _encode(capsys, run, "--out", tmp_path / "codes.npz")
    assert sorted(codes) == ["labels", "z"] and codes["z"].shape == (10000, 2)
    model = load_model(run)
    x = load_dataset("mnist", REPO_ROOT / "data").test_x[:50]
    with torch.no_grad():
        np.testing.assert_allclose(codes["z"][:50], model.encode(x).numpy(), atol=1e-6)
    with pytest.raises(AAEError, match=r"images of shape \(3, 100\); the unsupervised model reads \(n, 784\) or \(n, 28, 28\)"):
        encode_images(model, torch.rand(3, 100))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--out", "{tmp}/codes.png"], "--out {tmp}/codes.png: give a file name ending in .npz"),
        (["--out", "{tmp}"], "a folder; give a file such as"),
        (["--split", "test", "--images", "{tmp}/small.npz", "--out", "{tmp}/c.npz"],
         "--split is for the run's own images; --images gives others"),
        (["--data-dir", "{tmp}", "--images", "{tmp}/small.npz", "--out", "{tmp}/c.npz"],
         "--data-dir is for the run's own images"),
        (["--images", "{tmp}/small.npz", "--out", "{tmp}/c.npz"],
         "{tmp}/small.npz: images of shape (3, 4, 4); the semi-supervised model reads (n, 784) or (n, 28, 28)"),
        (["--images", "{tmp}/none.npz", "--out", "{tmp}/c.npz"], "{tmp}/none.npz: no such file"),
        (["--images", "{tmp}/typo.npz", "--out", "{tmp}/c.npz"],
         "{tmp}/typo.npz: unknown array 'labels'; images to encode are x, and their labels y"),
        (["--images", "{tmp}/wide.npz", "--out", "{tmp}/c.npz"],
         "images of shape (3, 16, 49); the semi-supervised model reads (n, 784) or (n, 28, 28)"),
        (["--images", "{tmp}/small.npz", "--out", "{tmp}/small.npz"], "is the --images file: give another name"),
        (["--out", "{tmp}/codes-old.npz"], "--out {tmp}/codes-old.npz exists: give another name, or --overwrite"),
        (["--out", "{tmp}/small.npz/c.npz"], "{tmp}/small.npz is a file, not a folder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(semi, tmp_path, capsys, argv, fragment):
    np.savez(tmp_path / "small.npz", x=np.full((3, 4, 4), 0.5, dtype=np.float32))
    np.savez(tmp_path / "typo.npz", x=np.full((3, 28, 28), 0.5, dtype=np.float32), labels=np.arange(3))
    np.savez(tmp_path / "wide.npz", x=np.full((3, 16, 49), 0.5, dtype=np.float32))
    (tmp_path / "codes-old.npz").write_bytes(b"mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(["encode", str(semi), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment.format(tmp=tmp_path) in err[0], err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written or replaced


def test_overwrite_replaces_an_earlier_codes_file(semi, tmp_path, capsys):
    (tmp_path / "codes.npz").write_bytes(b"old")
    codes = _encode(capsys, semi, "--split", "val", "--overwrite", "--out", tmp_path / "codes.npz")
    assert codes["z"].shape == (100, 10)


@pytest.mark.parametrize(
    "x, fragment",
    [
        (np.full((2, 784), 0.5, dtype=np.float32), None),  # an array will do
        (torch.full((2, 28, 28), 0.5), None),  # and image-shaped
        (torch.full((2, 28, 28), 255, dtype=torch.uint8), r"dtype torch.uint8; give floats in \[0, 1\]; divide uint8 pixels by 255"),
        (torch.full((2, 784), 2.0), r"values in \[2, 2\]; the model trained on \[0, 1\]"),
        (torch.full((2, 784), float("nan")), "NaN or infinite"),
        (torch.zeros(0, 784), r"none \(n = 0\)"),
        (torch.full((2, 28, 27), 0.5), r"images of shape \(2, 28, 27\)"),
        ([[0.5] * 784], "a list; give a tensor or array"),
    ],
)
def test_encode_images_checks_what_it_is_given(semi, x, fragment):
    model = load_model(semi)
    model.train()
    if fragment is None:
        assert encode_images(model, x)["z"].shape == (2, 10)
        assert model.training  # its mode is given back
    else:
        with pytest.raises(AAEError, match=fragment):
            encode_images(model, x)
    with pytest.raises(AAEError, match="batch_size 0: must be a positive integer"):
        encode_images(model, torch.full((2, 784), 0.5), batch_size=0)


def test_a_custom_prior_run_is_encoded_without_its_prior(tmp_path, capsys):
    from torch_aae import TrainConfig, UnsupervisedAAE, fit

    class Ring:
        dim = 2

        def sample(self, n, labels=None):
            angle = torch.rand(n) * 6.2832
            return torch.stack([angle.cos(), angle.sin()], 1)

    data = load_dataset("mnist", REPO_ROOT / "data", subset=200)
    torch.manual_seed(0)
    fit(UnsupervisedAAE(prior=Ring(), hidden=16, disc_hidden=16), data, TrainConfig(epochs=1),
        out=tmp_path / "ring", progress=False)  # fmt: skip
    codes = _encode(capsys, tmp_path / "ring", "--out", tmp_path / "ring.npz")
    expected = encode_run(tmp_path / "ring", prior=Ring())
    np.testing.assert_array_equal(codes["z"], expected["z"].numpy())
    # From Python too, without the prior (and with a torch.device, as load_model takes one):
    np.testing.assert_array_equal(encode_run(tmp_path / "ring", device=torch.device("cpu"))["z"].numpy(), codes["z"])


def test_a_custom_prior_conditioned_on_labels_is_encoded_without_it(tmp_path, capsys):
    from torch_aae import TrainConfig, UnsupervisedAAE, fit

    class Parts:  # K = 10 parts of a ring, one per class
        dim, num_classes = 2, 10

        def sample(self, n, labels=None):
            k = torch.randint(10, (n,)) if labels is None else labels.clamp(min=0)
            angle = (k + torch.rand(n)) * 0.628
            return torch.stack([angle.cos(), angle.sin()], 1)

    data = load_dataset("mnist", REPO_ROOT / "data", subset=200)
    torch.manual_seed(0)
    fit(UnsupervisedAAE(prior=Parts(), hidden=16, disc_hidden=16, condition_labels=50), data, TrainConfig(epochs=1),
        out=tmp_path / "parts", progress=False)  # fmt: skip
    expected = encode_run(tmp_path / "parts", prior=Parts())["z"].numpy()
    np.testing.assert_array_equal(encode_run(tmp_path / "parts")["z"].numpy(), expected)
    np.testing.assert_array_equal(_encode(capsys, tmp_path / "parts", "--out", tmp_path / "parts.npz")["z"], expected)


def test_a_split_the_run_lacks_or_a_checkpoint_without_images_is_refused(semi, tmp_path, capsys):
    run = _train(tmp_path, "unsupervised")  # no --val-size
    assert cli.main(["encode", str(run), "--split", "val", "--out", str(tmp_path / "c.npz")]) == 1
    assert "--split val: the run has no validation split (it trained without --val-size)" in capsys.readouterr().err
    ckpt = semi / "checkpoints" / "latest.pt"
    assert cli.main(["encode", str(ckpt), "--out", str(tmp_path / "c.npz")]) == 1
    assert f"{ckpt}: a checkpoint file; give its run folder (which knows the images), or images to encode with --images" in capsys.readouterr().err
    with pytest.raises(AAEError, match="split 'all': choose test, train, val"):
        encode_run(semi, "all")
    assert not (tmp_path / "c.npz").exists()
