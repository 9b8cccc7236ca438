"""The evaluation classifier: known-answer tests of its metric functions, its cache, its CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_cli, subset_of, synthetic_dataset, tiny_model
from torch_aae import cli
from torch_aae.checkpoint import save_model
from torch_aae.classifier import (
    Classifier,
    cache_dir,
    cached_classifier,
    classifier_accuracy,
    classifier_path,
    data_checksum,
    features,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from torch_aae.errors import AAEError

TINY_NET = dict(channels=(8, 8), hidden=32)


@pytest.fixture(scope="module")
def data(mnist):
    """2000 real training images, 500 real test images."""
    return subset_of(mnist, 2000, 500)


@pytest.fixture(scope="module")
def clf(data):
    return train_classifier(data, epochs=2, batch_size=20, lr=3e-3, progress=False, **TINY_NET)


def test_real_test_images_score_about_the_classifiers_accuracy(clf, data):
    predicted = predict(clf, data.test_x)
    assert predicted.shape == (500,) and predicted.dtype == torch.int64
    accuracy = classifier_accuracy(clf, data.test_x, data.test_y)
    assert accuracy == pytest.approx(float((predicted == data.test_y).float().mean()))
    assert accuracy > 0.7  # a tiny net after 2 epochs on 2000 images (about 0.83)


def test_known_answers_perfect_labels_one_and_noise_low(clf, data):
    # Its own predictions as labels: exactly 1.0.
    assert classifier_accuracy(clf, data.test_x, predict(clf, data.test_x)) == 1.0
    # Uniform noise with balanced labels: about chance, far below real digits.
    noise = torch.rand(500, 784, generator=torch.Generator().manual_seed(0))
    assert classifier_accuracy(clf, noise, torch.arange(500) % 10) < 0.3


def test_features_are_the_penultimate_layer(clf, data):
    feats = features(clf, data.test_x[:50])
    assert feats.shape == (50, 32)
    assert torch.allclose(feats, features(clf, data.test_x[:50], batch_size=7), atol=1e-6)  # eval
    assert torch.allclose(clf.head[1](feats), clf(data.test_x[:50]), atol=1e-5)


def test_mismatched_images_and_labels_are_refused(clf, data):
    with pytest.raises(AAEError, match="10 images but 9 labels"):
        classifier_accuracy(clf, data.test_x[:10], data.test_y[:9])


def test_cache_round_trip_is_keyed_by_the_test_split(clf, data, tmp_path):
    with pytest.raises(AAEError, match="aae classifier train"):
        cached_classifier(data, tmp_path)
    save_classifier(clf, classifier_path(data, tmp_path), {"test_accuracy": 0.9})
    # A smaller training split (--subset) still finds it: the key is the test split.
    loaded = cached_classifier(subset_of(data, 100, 500), tmp_path)
    assert torch.equal(predict(loaded, data.test_x), predict(clf, data.test_x))
    assert (tmp_path / classifier_path(data).name).with_suffix(".json").is_file()


def test_a_cached_classifier_of_other_data_is_refused_not_run(clf, data, tmp_path):
    """A cache file of other data under this data's name (copied or renamed) was loaded, then
    failed in a reshape, or scored the wrong test split without a word."""
    from torch_aae.classifier import train_and_cache

    built = data  # subset_of's Dataset, as built in Python
    data = subset_of(built, 2000, 500)
    data.source = {"dataset": "mnist"}  # as load_dataset records it
    path = classifier_path(data, tmp_path)
    save_classifier(clf, path, {"dataset": "other", "checksum": "0123456789abcdef"})
    for load in (lambda: cached_classifier(data, tmp_path), lambda: train_and_cache(data, tmp_path, epochs=1)):
        with pytest.raises(AAEError, match=r"the classifier of other data \(other, 28x28 images, 10 classes, test "
                                           rf"split 0123456789abcdef\), not of .* \(test split {data_checksum(data)}\); "
                                           rf"delete it, or replace it with `aae classifier train --cache-dir {tmp_path} "
                                           r"--retrain`, or train_and_cache\(data, retrain=True\) from Python$"):
            load()
    wide = Classifier((28, 14), 10, **TINY_NET)  # the right test split's checksum, other images
    save_classifier(wide, path, {"dataset": data.name, "checksum": data_checksum(data)})
    with pytest.raises(AAEError, match=r"28x14 images"):
        cached_classifier(data, tmp_path)
    five = Classifier((28, 28), 5, **TINY_NET)  # the right checksum and images, other classes
    save_classifier(five, path, {"dataset": data.name, "checksum": data_checksum(data)})
    with pytest.raises(AAEError, match=r"28x28 images, 5 classes"):
        cached_classifier(data, tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # truncated: the message says what replaces it
    with pytest.raises(AAEError, match=r"not a readable checkpoint .*; delete it, or replace it with `aae classifier "
                                       rf"train --cache-dir {tmp_path} --retrain`"):
        cached_classifier(data, tmp_path)
    with pytest.raises(AAEError, match=r"replace it with train_and_cache\(data, retrain=True\) \(a Dataset built in Python"):
        cached_classifier(built, tmp_path)


def test_images_smaller_than_the_two_poolings_are_refused():
    with pytest.raises(AAEError, match="needs images of at least 4x4 pixels, not 3x40"):
        Classifier((3, 40), 3)
    Classifier((4, 4), 3)


def test_a_cache_that_cannot_be_written_is_refused_before_the_training(data, tmp_path, monkeypatch):
    from torch_aae import classifier as C

    monkeypatch.setattr(C, "train_classifier", lambda *a, **k: pytest.fail("trained before the cache was checked"))
    (tmp_path / "afile").write_text("")
    with pytest.raises(AAEError, match=rf"classifier cache {tmp_path / 'afile'}: cannot make it"):
        C.train_and_cache(data, tmp_path / "afile", epochs=1)
    classifier_path(data, tmp_path / "c").mkdir(parents=True)  # a folder where the file goes
    with pytest.raises(AAEError, match="is not a file; move it away"):
        C.train_and_cache(data, tmp_path / "c", epochs=1, retrain=True)


def test_zero_epochs_are_refused_with_a_cached_classifier_too(clf, data, tmp_path):
    from torch_aae.classifier import train_and_cache

    save_classifier(clf, classifier_path(data, tmp_path), {"test_accuracy": 0.9})
    with pytest.raises(AAEError, match="--epochs 0: must be positive"):
        train_and_cache(data, tmp_path, epochs=0)


def test_checksum_identifies_the_test_split(data):
    assert data_checksum(data) == data_checksum(subset_of(data, 10, 500))
    assert data_checksum(data) != data_checksum(subset_of(data, 10, 499))
    changed = subset_of(data, 10, 500)
    changed.test_y[0] = (changed.test_y[0] + 1) % 10
    assert data_checksum(changed) != data_checksum(data)
    changed.test_x = None
    with pytest.raises(AAEError, match="needs a labeled test split"):
        data_checksum(changed)
    # One test pixel changed, same labels: other test images, another classifier's key.
    pixel = subset_of(data, 10, 500)
    pixel.test_x[3, 400] = 1.0 - pixel.test_x[3, 400]
    assert data_checksum(pixel) != data_checksum(data)


def test_cache_dir_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_AAE_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert cache_dir() == tmp_path / "env"
    monkeypatch.delenv("TORCH_AAE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "torch_aae"


def test_an_aae_checkpoint_is_not_a_classifier(tmp_path):
    save_model(tiny_model(), tmp_path / "m.pt")
    with pytest.raises(AAEError, match="not an evaluation classifier"):
        load_classifier(tmp_path / "m.pt")


def test_cli_trains_caches_and_reuses(mnist, tmp_path, capsys):
    small = subset_of(mnist, 300, 100)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x=small.train_x.view(-1, 28, 28).numpy(), y=small.train_y.numpy(),
             x_test=small.test_x.view(-1, 28, 28).numpy(), y_test=small.test_y.numpy())  # fmt: skip
    proc = run_cli("classifier", "train", "--dataset", npz, "--cache-dir", tmp_path / "cache",
                   "--epochs", "1", "--no-progress", cwd=REPO_ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test accuracy 0.") and "trained in" in proc.stdout
    assert classifier_path(small, tmp_path / "cache").is_file()
    # Run again (in-process): the cached classifier is reused, and scores the same.
    assert cli.main(["classifier", "train", "--dataset", str(npz), "--cache-dir",
                     str(tmp_path / "cache"), "--no-progress"]) == 0  # fmt: skip
    again = capsys.readouterr().out
    assert "(cached;" in again and again.split()[2] == proc.stdout.split()[2]
    # Asked for other epochs than it was trained with: reused, and the difference said.
    assert cli.main(["classifier", "train", "--dataset", str(npz), "--cache-dir",
                     str(tmp_path / "cache"), "--epochs", "4", "--no-progress"]) == 0  # fmt: skip
    assert "(cached, trained with --epochs 1, not --epochs 4: --retrain trains it again;" in capsys.readouterr().out


@pytest.mark.parametrize("dataset, command", [("mnist", "`aae classifier train`"),
                                              ("fashion-mnist", "`aae classifier train --dataset fashion-mnist`")])
def test_a_missing_classifier_names_the_command_that_trains_it(tmp_path, dataset, command):
    from conftest import synthetic_dataset
    from torch_aae.classifier import require_classifier

    data = synthetic_dataset(test=6)
    data.source = {"dataset": dataset}
    with pytest.raises(AAEError, match="no evaluation classifier") as err:
        require_classifier(data, tmp_path)
    assert f"train it first (a few CPU minutes) with {command}, or train_and_cache(data) from Python;" in str(err.value)
    data.source = None  # built in Python: the command line cannot load it
    with pytest.raises(AAEError, match=r"with train_and_cache\(data\) \(a Dataset built in Python, which "
                                       r"`aae classifier train` cannot load\);"):  # fmt: skip
        require_classifier(data, tmp_path)


def test_a_supervised_run_without_a_folder_is_refused_before_training_without_a_classifier(tmp_path, monkeypatch):
    # It is evaluated at its end too: without the classifier it would train, then fail.
    from conftest import synthetic_dataset

    from torch_aae import SupervisedAAE, defaults, fit
    from torch_aae import supervised as supervised_module

    monkeypatch.setenv("TORCH_AAE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(supervised_module, "train_step", lambda *a, **k: pytest.fail("trained"))
    data = synthetic_dataset(40, test=10)
    model = SupervisedAAE(16, (4, 4), n_classes=3, hidden=16, disc_hidden=16)
    with pytest.raises(AAEError, match="no evaluation classifier for synthetic") as err:
        fit(model, data, config=defaults("supervised", labels="all", epochs=1, batch_size=10), progress=False)
    # Where it looked, and how to point it elsewhere: no `aae train` flag does (it said one did).
    assert f"in {tmp_path / 'empty-cache'} " in str(err.value)
    assert "set TORCH_AAE_CACHE=DIR for the supervised model to find it there" in str(err.value)


def test_a_supervised_run_is_refused_before_training_with_a_cache_of_other_data(tmp_path, monkeypatch):
    """Only the cache file's existence was checked before training: a file of other data (or a
    truncated one) trained the run, then failed at its final evaluation."""
    from conftest import synthetic_dataset

    from torch_aae import SupervisedAAE, defaults, fit
    from torch_aae import supervised as supervised_module

    monkeypatch.setenv("TORCH_AAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(supervised_module, "train_step", lambda *a, **k: pytest.fail("trained"))
    data = synthetic_dataset(40, test=10)
    model = SupervisedAAE(16, (4, 4), n_classes=3, hidden=16, disc_hidden=16)
    classifier_path(data).parent.mkdir()
    for info in ({"checksum": "0123456789abcdef"}, None):
        save_classifier(Classifier((4, 4), 3, **TINY_NET), classifier_path(data), info or {})
        if info is None:  # the right classifier, truncated
            classifier_path(data).write_bytes(classifier_path(data).read_bytes()[:100])
        with pytest.raises(AAEError, match="the classifier of other data" if info else "not a readable checkpoint"):
            fit(model, data, config=defaults("supervised", labels="all", epochs=1, batch_size=10), progress=False)


def test_parzen_metrics_skip_a_cache_of_other_data_with_a_note(tmp_path):
    from conftest import synthetic_dataset

    from torch_aae.api import sample_metrics

    data = synthetic_dataset(40, test=10)
    classifier_path(data, tmp_path).parent.mkdir(exist_ok=True)
    save_classifier(Classifier((4, 4), 3, **TINY_NET), classifier_path(data, tmp_path), {"checksum": "0" * 16})
    notes = []
    out = sample_metrics(tiny_model(in_dim=16, image_shape=(4, 4)), data, "cpu", n_samples=20, cache_dir=tmp_path,
                         note=notes.append, sigmas=(0.5,), val=data.train_x[:10])  # fmt: skip
    assert "parzen_ll" in out and "classifier_fd" not in out
    assert len(notes) == 1 and "skipped: " in notes[0] and "the classifier of other data" in notes[0]


@pytest.mark.parametrize("epochs, expected", [(3, [3e-3] * 4 + [3e-4] * 2), (1, [3e-3] * 2)])
def test_the_classifier_trains_at_lr_then_lr_over_10_in_its_last_epoch(epochs, expected):
    # Only the last of several epochs settles at a tenth of the rate; a single epoch keeps lr.
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    rates = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        train_classifier(synthetic_dataset(40, shape=(28, 28), classes=10), epochs=epochs, batch_size=20,
                         lr=3e-3, progress=False, **TINY_NET)  # fmt: skip
    finally:
        handle.remove()
    assert rates == pytest.approx(expected)
