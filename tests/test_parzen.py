"""Sample metrics with known answers: the Parzen-window log-likelihood, the Frechet distance, the
class histogram of samples; and `aae evaluate --parzen` on a tiny real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, tiny_model, tiny_train
from torch_aae import cli, load_dataset
from torch_aae.api import evaluate_run
from torch_aae.classifier import Classifier, classifier_path, save_classifier
from torch_aae.errors import AAEError
from torch_aae.metrics import class_histogram, frechet_distance
from torch_aae.parzen import (
    SIGMA_GRID,
    log_grid,
    parzen_evaluate,
    parzen_log_likelihoods,
    select_sigma,
    squared_distances,
    validation_images,
)
from torch_aae.train import fit


def gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal((n, d))


# ----------------------------------------------------------------------------------------------
# Parzen window


def test_one_sample_is_the_gaussian_density():
    x, s, sigma = np.array([[1.0, 2.0, -1.0]]), np.array([[0.5, 2.0, 0.0]]), 0.7
    expected = -1.25 / (2 * sigma**2) - 3 * math.log(sigma * math.sqrt(2 * math.pi))
    assert parzen_log_likelihoods(x, s, [sigma])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_squared_distances_match_the_direct_formula():
    x, s = torch.tensor(gaussian(5, 4, 0)), torch.tensor(gaussian(7, 4, 1))
    direct = ((x[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(x, s), direct, atol=1e-10)
    assert (squared_distances(x, x).diagonal() >= 0).all()  # clamped, never negative


def test_many_samples_of_a_gaussian_give_the_smoothed_analytic_density():
    # Parzen on samples of N(0, I) estimates N(0, I) convolved with N(0, sigma^2 I),
    # i.e. N(0, (1 + sigma^2) I): its log-density at the test points is known exactly.
    d, sigma = 2, 0.5
    samples, test = gaussian(20000, d, 0), gaussian(1000, d, 1)
    var = 1 + sigma**2
    analytic = -0.5 * (test**2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)
    estimate = parzen_log_likelihoods(test, samples, [sigma], batch_size=500)[0]
    assert estimate.mean() == pytest.approx(analytic.mean(), abs=0.02)
    assert np.abs(estimate - analytic).mean() < 0.05


def test_samples_equal_to_the_test_set_beat_noise():
    test = np.random.default_rng(0).random((200, 64))
    noise = np.random.default_rng(1).random((200, 64))
    val = test[:50]
    good = parzen_evaluate(test, test, val, batch_size=64)
    bad = parzen_evaluate(noise, test, val, batch_size=64)
    assert good["parzen_ll"] > bad["parzen_ll"] + 10
    assert good["parzen_sigma"] == min(SIGMA_GRID)  # exact copies: the narrowest window wins
    assert good["parzen_sigma_at_edge"] == 1.0  # ... at the grid's edge: a wider grid is due


def test_batching_does_not_change_the_result():
    x, s = gaussian(37, 5, 0), gaussian(11, 5, 1)
    full = parzen_log_likelihoods(x, s, [0.3, 1.0], batch_size=1000)
    assert np.allclose(full, parzen_log_likelihoods(x, s, [0.3, 1.0], batch_size=4), atol=1e-12)
    # torch float32 inputs give the same float64 result as numpy arrays
    as_torch = parzen_log_likelihoods(torch.tensor(x, dtype=torch.float32), s, [0.3])
    assert np.allclose(as_torch[0], parzen_log_likelihoods(x.astype(np.float32), s, [0.3])[0])


def test_sigma_is_the_best_of_the_grid_on_validation():
    samples, val = gaussian(3000, 2, 0), gaussian(500, 2, 1)
    grid = [0.05, 0.2, 0.4, 3.0]
    sigma, curve = select_sigma(val, samples, grid)
    assert sigma == max(curve, key=curve.get) and sigma in (0.2, 0.4)
    assert list(curve) == grid
    out = parzen_evaluate(samples, gaussian(50, 2, 2), val, sigmas=grid)
    assert out["parzen_sigma"] == sigma and out["parzen_sigma_at_edge"] == 0.0  # inside the grid
    assert parzen_evaluate(samples, val, val, sigmas=[sigma])["parzen_sigma_at_edge"] == 0.0  # one width: no edge


def test_evaluate_reports_mean_and_standard_error_of_the_chosen_sigma():
    samples, test, val = gaussian(500, 3, 0), gaussian(300, 3, 1), gaussian(100, 3, 2)
    out = parzen_evaluate(samples, test, val, sigmas=[0.3, 0.6, 1.2])
    ll = parzen_log_likelihoods(test, samples, [out["parzen_sigma"]])[0]
    assert out["parzen_ll"] == pytest.approx(ll.mean())
    assert out["parzen_se"] == pytest.approx(ll.std() / math.sqrt(300))
    assert out["parzen_n_samples"] == 500 and out["parzen_n_val"] == 100
    assert all(isinstance(v, float) for v in out.values())


def test_log_grid_is_the_default_grid_and_refuses_bad_bounds():
    assert log_grid(0.1, 1, 10) == pytest.approx(SIGMA_GRID)
    assert log_grid(0.2, 0.2, 1) == (pytest.approx(0.2),)
    fine = log_grid(0.13, 0.22, 12)
    assert len(fine) == 12 and fine[0] == pytest.approx(0.13) and fine[-1] == pytest.approx(0.22)
    assert np.allclose(np.diff(np.log(fine)), np.log(0.22 / 0.13) / 11)
    for bad in [(0, 1, 3), (1, 0.5, 3), (0.1, 1, 0), (0.1, 1, 2.5), (0.1, 0.2, 1), (0.1, 1, math.nan),
                (0.1, 1, math.inf), (math.nan, 1, 3), (0.1, math.inf, 3)]:
        with pytest.raises(AAEError, match="sigma grid"):
            log_grid(*bad)


@pytest.mark.parametrize("progress", [False, True])
def test_progress_bars_name_the_passes_and_change_nothing(monkeypatch, progress):
    from torch_aae import parzen

    bars = []

    def fake_tqdm(iterable, desc=None, leave=True, disable=False):
        bars.append((desc, disable))
        return iterable

    monkeypatch.setattr(parzen, "tqdm", fake_tqdm)
    samples, test, val = gaussian(300, 3, 0), gaussian(200, 3, 1), gaussian(100, 3, 2)
    out = parzen_evaluate(samples, test, val, sigmas=[0.3, 0.6], batch_size=64, progress=progress)
    assert out == parzen_evaluate(samples, test, val, sigmas=[0.3, 0.6], batch_size=64)
    shown = [("parzen: validation", None), ("parzen: test", None)]  # None: on a terminal only
    assert bars[:2] == (shown if progress else [(None, True), (None, True)])


def test_validation_images_are_parzen_ll_pys():
    train = torch.arange(60000)
    assert torch.equal(validation_images(train), torch.arange(50000, 51000))
    assert torch.equal(validation_images(torch.arange(3000), 100), torch.arange(100))
    with pytest.raises(AAEError, match="validation images"):
        validation_images(torch.arange(500))


@pytest.mark.parametrize("bad", [dict(sigmas=[0.0]), dict(samples=np.zeros((0, 3))),
                                 dict(samples=np.zeros((4, 2)))])  # fmt: skip
def test_bad_input_is_refused(bad):
    args = {**dict(x=np.zeros((3, 3)), samples=np.zeros((4, 3)), sigmas=[0.5]), **bad}
    with pytest.raises(AAEError, match="Parzen"):
        parzen_log_likelihoods(**args)


# ----------------------------------------------------------------------------------------------
# Frechet distance and class histogram


def test_frechet_distance_of_identical_sets_is_zero():
    feats = gaussian(500, 16, 0)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(feats, feats[::-1]) == pytest.approx(0.0, abs=1e-8)  # order-free


def test_frechet_distance_of_one_feature_is_the_1d_formula():
    # np.cov of one feature is 0-d: np.trace failed on it.
    a = np.random.default_rng(0).normal(size=(500, 1))
    a -= a.mean()
    b = 3.0 * a + 2.0  # mean shift 2, std s scaled by 3: 2^2 + (s - 3s)^2
    assert frechet_distance(a, b) == pytest.approx(4.0 + 4.0 * a.var(ddof=1), rel=1e-9)


def test_frechet_distance_of_a_shift_is_its_squared_length_and_grows():
    feats = gaussian(500, 8, 0)
    shifts = [0.1, 0.5, 2.0]
    fds = [frechet_distance(feats, feats + s) for s in shifts]
    assert fds == pytest.approx([8 * s**2 for s in shifts], rel=1e-6)  # same covariance
    assert fds == sorted(fds)


def test_frechet_distance_of_a_scaling_is_known():
    # x vs 2x: covariances C and 4C, (C 4C)^(1/2) = 2C, so FD = |mu|^2 + tr(C).
    feats = gaussian(400, 6, 0) + 1.0
    expected = (feats.mean(0) ** 2).sum() + np.trace(np.cov(feats, rowvar=False))
    assert frechet_distance(feats, 2 * feats) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_independent_draws_is_small_and_shapes_are_checked():
    small = frechet_distance(gaussian(4000, 4, 0), gaussian(4000, 4, 1))
    assert 0 <= small < 0.05 < frechet_distance(gaussian(4000, 4, 0), gaussian(4000, 4, 1, 2.0))
    with pytest.raises(ValueError, match=r"need \(n, d\) and \(m, d\) with n, m >= 2, got \(10, 4\) and \(10, 3\)"):
        frechet_distance(gaussian(10, 4, 0), gaussian(10, 3, 0))
    with pytest.raises(ValueError, match=r"got \(1, 4\) and \(10, 4\)"):  # one row has no covariance
        frechet_distance(gaussian(1, 4, 0), gaussian(10, 4, 0))


def test_class_histogram_known_answers():
    uniform = class_histogram(np.arange(1000) % 10, 10)
    assert [uniform[f"sample_class_{k}"] for k in range(10)] == [0.1] * 10
    assert uniform["sample_class_entropy"] == pytest.approx(1.0)
    collapsed = class_histogram(np.full(50, 3), 10)
    assert collapsed["sample_class_3"] == 1.0 and collapsed["sample_class_entropy"] == 0.0
    with pytest.raises(ValueError, match=r"classes in 0\.\.9"):
        class_histogram(np.array([0, 10]), 10)


# ----------------------------------------------------------------------------------------------
# The command line, on a tiny real run (300 MNIST images, one epoch, in-process)

DATA_DIR = str(REPO_ROOT / "data")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist):
    run = tmp_path_factory.mktemp("parzen") / "run"
    data = load_dataset("mnist", REPO_ROOT / "data", subset=300)  # reloadable by evaluate_run, as made
    fit(tiny_model(), data, tiny_train(), out=run, progress=False)
    return run


def test_evaluate_parzen_adds_the_metrics(tiny_run, tmp_path, capsys):
    # An empty classifier cache: the classifier metrics are skipped with a one-line note.
    argv = ["evaluate", str(tiny_run), "--parzen", "--samples", "200", "--data-dir", DATA_DIR,
            "--cache-dir", str(tmp_path / "empty")]  # fmt: skip
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    metrics = json.loads((tiny_run / "eval.json").read_text())
    assert json.loads(out) == cli._shown(metrics)  # printed: 6 digits
    assert metrics["parzen_n_samples"] == 200 and metrics["parzen_sigma"] in SIGMA_GRID
    assert metrics["parzen_n_val"] == 1000 and metrics["parzen_se"] > 0
    assert (metrics["parzen_grid_lo"], metrics["parzen_grid_hi"], metrics["parzen_grid_n"]) == (
        pytest.approx(0.1), pytest.approx(1.0), 10)
    assert np.isfinite(metrics["parzen_ll"]) and "test_recon_bce" in metrics
    assert "classifier_fd" not in metrics
    assert len(err.strip().splitlines()) == 1 and "skipped" in err


def test_evaluate_parzen_chooses_the_width_on_the_runs_held_out_images(tiny_run, tmp_path, capsys):
    # A run trained with a validation split: its first 1,000 images, never trained on, choose sigma.
    from torch_aae.api import draw_samples
    from torch_aae.checkpoint import load_model
    from torch_aae.config import Config, DataConfig, ModelConfig
    from torch_aae.data import load_dataset

    data = load_dataset("mnist", DATA_DIR, subset=300, val_size=1000, seed=3)
    run = tmp_path / "held"
    config = Config("unsupervised", DataConfig(val_size=1000, subset=300, data_seed=3),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32, dropout=0.0), tiny_train())  # fmt: skip
    fit(tiny_model(), data, tiny_train(), out=run, config=config, progress=False)
    notes = []
    metrics = evaluate_run(run, data_dir=DATA_DIR, parzen=True, n_samples=200, note=notes.append,
                           cache_dir=tmp_path / "empty")  # fmt: skip
    assert metrics["parzen_val_held_out"] == 1.0 and metrics["parzen_n_val"] == 1000
    samples = draw_samples(load_model(run), 200, "cpu", seed=0)
    val_ll = parzen_log_likelihoods(data.val_x, samples, [metrics["parzen_sigma"]])[0].mean()
    assert metrics["parzen_val_ll"] == pytest.approx(float(val_ll), rel=1e-9)
    train_ll = parzen_log_likelihoods(validation_images(load_dataset("mnist", DATA_DIR).train_x),
                                      samples, [metrics["parzen_sigma"]])[0].mean()  # fmt: skip
    assert abs(metrics["parzen_val_ll"] - float(train_ll)) > 1e-6  # other images than 50,000-50,999
    # A run on the whole training set: images 50,000-50,999, as parzen_ll.py.
    assert evaluate_run(tiny_run, data_dir=DATA_DIR, parzen=True, n_samples=100, note=notes.append,
                        cache_dir=tmp_path / "empty")["parzen_val_held_out"] == 0.0  # fmt: skip


def test_evaluate_takes_another_sigma_grid(tiny_run, tmp_path, capsys):
    argv = ["evaluate", str(tiny_run), "--parzen", "--samples", "200", "--data-dir", DATA_DIR,
            "--cache-dir", str(tmp_path / "empty"), "--sigma-grid", "0.3", "0.5", "3"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["parzen_sigma"] in log_grid(0.3, 0.5, 3) and metrics["parzen_grid_n"] == 3
    assert cli.main([*argv[:-4], "--sigma-grid", "0.5", "0.3", "3"]) == 1
    assert "sigma grid: need 0 < lo <= hi" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tiny_run), "--data-dir", DATA_DIR, "--sigma-grid", "0.1", "1", "5"]) == 1
    assert "only with --parzen" in capsys.readouterr().err


def test_cached_classifier_adds_fd_and_histogram(tiny_run, tmp_path, mnist):
    torch.manual_seed(0)  # an untrained tiny classifier: the plumbing, not the values
    save_classifier(Classifier(channels=(4, 4), hidden=8), classifier_path(mnist, tmp_path), {})
    notes = []
    metrics = evaluate_run(tiny_run, data_dir=DATA_DIR, parzen=True, n_samples=100,
                           cache_dir=tmp_path, note=notes.append)  # fmt: skip
    assert notes == [] and metrics["classifier_fd"] > 0
    assert sum(metrics[f"sample_class_{k}"] for k in range(10)) == pytest.approx(1.0)
    assert 0 <= metrics["sample_class_entropy"] <= 1


def test_evaluate_refuses_too_few_samples_in_one_line(tiny_run, capsys):
    assert cli.main(["evaluate", str(tiny_run), "--parzen", "--samples", "1",
                     "--data-dir", DATA_DIR]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("aae: error:") and "--samples 1" in err and "\n" not in err


def test_plain_evaluate_keeps_the_parzen_keys_of_the_same_checkpoint(tiny_run, tmp_path, capsys):
    base = ["evaluate", str(tiny_run), "--data-dir", DATA_DIR]
    assert cli.main([*base, "--parzen", "--samples", "200", "--cache-dir", str(tmp_path / "empty")]) == 0
    with_parzen = json.loads((tiny_run / "eval.json").read_text())
    assert cli.main(base) == 0
    plain = json.loads((tiny_run / "eval.json").read_text())
    assert plain["parzen_ll"] == with_parzen["parzen_ll"]
    assert plain["checkpoint_step"] == with_parzen["checkpoint_step"] > 0
    # Figures of another checkpoint (an earlier step's) no longer describe this one.
    (tiny_run / "eval.json").write_text(json.dumps({**plain, "checkpoint_step": plain["checkpoint_step"] - 1}))
    assert cli.main(base) == 0
    assert "parzen_ll" not in json.loads((tiny_run / "eval.json").read_text())
    capsys.readouterr()


def test_bench_parzen_reports_each_seeds_evaluation_and_their_spread(tmp_path, monkeypatch, capsys):
    # `aae bench parzen`: two tiny seeds (300 images, one epoch), each scored by the Parzen
    # evaluation of its final checkpoint; the mean and std are over those two figures.
    monkeypatch.setenv("TORCH_AAE_CACHE", str(tmp_path / "empty"))  # no classifier: no FD
    monkeypatch.setattr("torch_aae.bench.PARZEN_SAMPLES", 200)
    out = tmp_path / "bench"
    argv = ["bench", "parzen", "--out", str(out), "--seeds", "2", "--seed", "3", "--z-dim", "8",
            "--subset", "300", "--hidden", "32", "--disc-hidden", "32", "--epochs", "1",
            "--data-dir", DATA_DIR, "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["model"] == "unsupervised" and result["seeds"] == [3, 4]
    assert result["z_dim"] == 8 and result["paper_parzen_ll"] == [340.0, 2.0]
    for run in result["runs"]:
        on_disk = json.loads((out / f"seed-{run['seed']}" / "eval.json").read_text())
        assert on_disk["parzen_n_samples"] == 200
        assert (run["parzen_ll"], run["parzen_se"]) == (on_disk["parzen_ll"], on_disk["parzen_se"])
    scores = result["parzen_ll"]
    assert scores[0] != scores[1]  # the seeds trained different weights
    assert result["parzen_ll_mean"] == pytest.approx(sum(scores) / 2)
    assert result["parzen_ll_std"] == pytest.approx(abs(scores[0] - scores[1]) / 2**0.5)
    table = capsys.readouterr().out
    assert "| unsupervised | 8 | 2 |" in table and "parzen ll (nats)" in table and "340.0 ± 2.0" in table
    assert (out / "bench.md").read_text() in table
    # Run again: the finished seeds are not trained again, and score the same.
    assert cli.main(argv) == 0
    assert json.loads((out / "bench.json").read_text())["parzen_ll"] == scores
    capsys.readouterr()
