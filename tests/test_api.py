"""The Python API as a researcher uses it: what `fit` records, resuming a Python run from the CLI,
and the checks that turn late, deep failures into one clear error."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from conftest import REPO_ROOT, subset_of, synthetic_dataset, tiny_model, tiny_train

from torch_aae import (
    AAEError, ClusteringAAE, Config, DataConfig, GaussianPrior, ModelConfig, SemiSupervisedAAE, SupervisedAAE,
    UnsupervisedAAE, build_model, defaults, encode_run, evaluate_run, fit, load_dataset, load_run_config, plot_run,
)  # fmt: skip
from torch_aae import cli
from torch_aae.run_folder import data_digest


@pytest.fixture(scope="module")
def loaded():
    """MNIST as `load_dataset` gives it: 200 training images after a 100-image validation split."""
    return load_dataset("mnist", data_dir=REPO_ROOT / "data", subset=200, val_size=100, seed=5)


def test_a_python_run_records_its_data_and_resumes_from_the_cli_elsewhere(loaded, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(tiny_model(seed=3), loaded, tiny_train(epochs=1, seed=3), out=run, progress=False)
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert recorded == {"dataset": "mnist", "data_dir": str(REPO_ROOT / "data" / "mnist"), "subset": 200,
                        "val_size": 100, "labels": None, "data_seed": 5}  # fmt: skip
    monkeypatch.chdir(tmp_path)  # not the repository: ./data is not there
    assert cli.main(["train", "unsupervised", "--out", str(run), "--resume", "--epochs", "2",
                     "--no-progress"]) == 0  # fmt: skip
    steps = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert steps == [1, 2] and meta["step"] == 2 * 200 // 50  # both epochs on the 200 images
    assert "test_recon_bce" in evaluate_run(run)
    record = json.loads((run / "data.json").read_text())  # its config loads its data again
    assert record == {"made_by": "load_dataset", "name": "mnist", "train": 200, "val": 100, "test": 10000,
                      "sha1": data_digest(loaded)}  # fmt: skip


def test_fit_takes_the_train_section_of_a_config_and_records_the_models_own_arguments(loaded, tmp_path):
    config = Config("unsupervised", train=tiny_train(epochs=2))  # its model and data sections: defaults
    summary = fit(tiny_model(z_dim=3), loaded, config=config, out=tmp_path / "run", progress=False)
    assert summary["epochs"] == 2
    recorded = load_run_config(tmp_path / "run")
    assert (recorded.model.z_dim, recorded.model.hidden, recorded.train.epochs) == (3, 32, 2)
    assert (recorded.data.subset, recorded.data.val_size) == (200, 100)  # how the data was loaded
    with pytest.raises(AAEError, match="config is for the semi-supervised model, not unsupervised"):
        fit(tiny_model(), loaded, config=Config("semi-supervised", DataConfig(labels="100")), progress=False)
    with pytest.raises(AAEError, match="train must be a TrainConfig, not dict"):
        fit(tiny_model(), loaded, {"epochs": 1}, progress=False)


@pytest.mark.parametrize("kind", ["unsupervised", "supervised", "semi-supervised", "clustering", "dim-reduction"])
def test_defaults_are_the_command_lines(kind):
    args = cli.build_parser().parse_args(["train", kind, "--out", "x"])
    assert defaults(kind) == cli._config_from_args(args)
    labeled = kind in ("supervised", "semi-supervised", "dim-reduction")
    assert defaults(kind, epochs=3, labels="1000" if labeled else None).train.epochs == 3


@pytest.mark.parametrize(
    "kind, settings, fragment",
    [
        ("unsupervised", {"labels": "100"}, "--labels 100: the unsupervised model uses no labeled images"),
        ("clustering", {"labels": "100"}, "--labels 100: the clustering model uses no labeled images"),
        ("unsupervised", {"lr_sup": 0.1}, "--lr-sup 0.1: the unsupervised model has no supervised phase"),
        ("semi-supervised", {"prior_components": 5}, "--prior-components 5: the semi-supervised model does not read it"),
    ],
)
def test_defaults_refuse_a_setting_the_model_does_not_read_at_once(kind, settings, fragment):
    with pytest.raises(AAEError, match=re.escape(fragment)):
        defaults(kind, **settings)  # as `aae train` refuses the flag, not later in fit


def test_defaults_refuse_an_unknown_setting_or_model():
    with pytest.raises(AAEError, match="defaults: no setting named lr, zdim"):
        defaults("semi-supervised", zdim=3, lr=1e-3)
    with pytest.raises(AAEError, match="unknown model 'vae'"):
        defaults("vae")


def test_fit_without_a_config_trains_as_the_command_line_would(loaded, tmp_path):
    torch.manual_seed(0)
    model = SemiSupervisedAAE(784, (28, 28), hidden=32, disc_hidden=32)
    fit(model, loaded, tiny_train(), out=tmp_path / "run", progress=False)
    recorded = load_run_config(tmp_path / "run")
    assert recorded.data.labels == "100"  # the command line's, not every label
    assert (tmp_path / "run" / "labeled_indices.json").is_file()


def test_a_config_whose_data_seed_did_not_draw_the_split_is_refused(loaded, tmp_path):
    # loaded's validation split was drawn with seed 5: a run recording data_seed 1 would be
    # resumed and evaluated on another split, its validation images counted as held out.
    config = Config("unsupervised", DataConfig(data_seed=1), train=tiny_train())
    with pytest.raises(AAEError, match="validation split was drawn with seed 5 .*data_seed is 1"):
        fit(tiny_model(), loaded, config=config, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    fit(tiny_model(), loaded, config=Config("unsupervised", DataConfig(data_seed=5), train=tiny_train()),
        out=tmp_path / "run", progress=False)  # fmt: skip
    assert load_run_config(tmp_path / "run").data_draw_seed == 5


def test_evaluate_scores_clusters_on_the_split_that_training_scored(loaded, tmp_path):
    torch.manual_seed(0)
    model = ClusteringAAE(784, (28, 28), n_classes=4, z_dim=2, hidden=32, disc_hidden=32)
    summary = fit(model, loaded, tiny_train(), out=tmp_path / "run", progress=False)
    again = evaluate_run(tmp_path / "run")
    # The same data as in training: the clusters are labeled from the same 200 training images
    # (majority vote) and the same 100 validation images (the paper's rule); the full test set.
    for key in ("test_cluster_error", "test_cluster_error_paper_rule", "clusters_used"):
        assert again[key] == summary[key], key


def test_a_clustering_run_from_python_records_its_clusters(loaded, tmp_path):
    torch.manual_seed(0)
    model = ClusteringAAE(784, (28, 28), n_classes=4, z_dim=2, hidden=32, disc_hidden=32)
    fit(model, loaded, tiny_train(), out=tmp_path / "run", progress=False)
    config = load_run_config(tmp_path / "run")
    assert config.model.clusters == 4
    assert build_model(config, loaded).model_args == model.model_args  # what a resume rebuilds


def test_a_python_resume_under_other_settings_is_refused(loaded, tmp_path):
    run = tmp_path / "run"
    fit(tiny_model(seed=3), loaded, tiny_train(seed=3), out=run, progress=False)
    with pytest.raises(AAEError, match="resume: the run was made with train.batch_size=50, not 20"):
        fit(tiny_model(seed=3), loaded, tiny_train(seed=3, epochs=2, batch_size=20), out=run, resume=True,
            progress=False)  # fmt: skip
    fit(tiny_model(seed=3), loaded, tiny_train(seed=3, epochs=2, lr_step=1), out=run, resume=True,
        progress=False)  # fmt: skip  (epochs and the schedule may change)


def test_build_model_draws_the_weights_from_the_configs_seed(loaded):
    config = defaults("unsupervised", hidden=32, disc_hidden=32, seed=7)
    before = torch.random.get_rng_state()
    a, b = build_model(config, loaded), build_model(config, loaded)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global state left as it was
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    torch.manual_seed(7)  # what `aae train --seed 7` does before it builds the model
    assert torch.equal(a.encoder.net[0].weight, type(a).from_config(config.model, 784, (28, 28)).encoder.net[0].weight)
    other = build_model(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=8)), loaded)
    assert not torch.equal(a.encoder.net[0].weight, other.encoder.net[0].weight)
    with pytest.raises(AAEError, match=r"build_model takes a Config \(e.g. defaults\('semi-supervised'\)\), not str"):
        build_model("semi-supervised", loaded)


def test_a_python_resume_without_settings_takes_the_runs_own(loaded, tmp_path):
    run = tmp_path / "run"
    fit(tiny_model(seed=3), loaded, tiny_train(seed=3, epochs=2, lr_recon=3e-3), out=run, progress=False)
    (run / "summary.json").unlink()
    # Not the unsupervised model's defaults (epochs 100, lr_recon 1e-4): the run's own.
    summary = fit(tiny_model(seed=3), loaded, out=run, resume=True, progress=False)
    assert summary["epochs"] == 2
    assert load_run_config(run).train == tiny_train(seed=3, epochs=2, lr_recon=3e-3)
    summary = fit(tiny_model(seed=3), loaded, tiny_train(seed=3, epochs=3, lr_recon=3e-3), out=run,
                  resume=True, progress=False)  # fmt: skip  (train alone: the run's config with it)
    assert summary["epochs"] == 3
    with pytest.raises(AAEError, match=r"resume: .*run holds a run of the unsupervised model, not semi-supervised$"):
        fit(SemiSupervisedAAE(hidden=16, disc_hidden=16), loaded, out=run, resume=True, progress=False)


def test_an_interrupted_run_of_load_datasets_data_names_the_command_that_continues_it(loaded, tmp_path):
    from torch_aae import Interrupted
    from torch_aae import stopping

    stopping.SOFT_STOP.set()  # as a bench worker's stop request: at the first step's end
    try:
        with pytest.raises(Interrupted, match=rf"interrupted at epoch 1, step 1; continue with "
                                              rf"`aae train unsupervised --out {tmp_path / 'run'} --resume`$"):  # fmt: skip
            fit(tiny_model(seed=3), loaded, tiny_train(seed=3), out=tmp_path / "run", progress=False)
    finally:
        stopping.SOFT_STOP.clear()


def _data(**changes):
    return dataclasses.replace(synthetic_dataset(40, test=10), **changes)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"train_y": torch.arange(30)}, "train_y: torch.int64 tensor of shape (30,); expected int64 labels (40,)"),
        ({"train_x": torch.rand(40, 16).numpy()}, "train_x: ndarray; expected a float32 tensor"),
        ({"train_x": (torch.rand(40, 16) * 255).to(torch.uint8)}, "train_x: torch.uint8 tensor"),
        ({"train_x": torch.rand(40, 16) * 255}, "train_x: values in ["),  # (unseeded: its least varies)
        ({"test_x": torch.rand(10, 9)}, "test_x: 9 features, train_x 16"),
        ({"train_y": (torch.arange(40) % 3).float()}, "train_y: torch.float32 tensor"),
        ({"image_shape": (5, 5)}, "image_shape (5, 5) holds 25 values, not the images' 16"),
        ({"train_x": torch.rand(40, 16).index_fill(0, torch.tensor([7]), float("nan"))}, "train_x: 16 NaN values"),
        ({"test_x": torch.full((10, 16), float("nan"))}, "test_x: 160 NaN values; expected numbers in [0, 1]"),
        ({"train_y": torch.arange(40) % 3 - 1}, "train_y: labels -1 to 1; expected 0 to 2"),
        ({"test_y": torch.arange(10) % 4}, "test_y: labels 0 to 3; expected 0 to 2"),
    ],
)
def test_a_hand_built_dataset_is_checked_before_training(changes, fragment):
    with pytest.raises(AAEError) as err:
        fit(tiny_model(in_dim=16, image_shape=(4, 4)), _data(**changes), tiny_train(batch_size=10), progress=False)
    assert fragment in str(err.value)


@pytest.mark.parametrize("changes", [{"test_y": None}, {"val_x": torch.rand(5, 16)}], ids=["test", "val"])
def test_a_split_without_labels_is_refused_where_the_model_scores_it_by_them(changes, tmp_path):
    split = "test" if "test_y" in changes else "val"
    data = _data(**changes)
    semi = SemiSupervisedAAE(16, (4, 4), n_classes=3, hidden=16, disc_hidden=16)
    with pytest.raises(AAEError, match=f"synthetic: train_y labels train_x, but {split}_y is None, and the "
                                       f"semi-supervised model scores {split}_x by its labels"):  # fmt: skip
        fit(semi, data, config=defaults("semi-supervised", labels="all", batch_size=10, epochs=1), progress=False)
    # The unsupervised model reads no labels there: it trains and evaluates.
    assert "test_recon_bce" in fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=10),
                                   progress=False)  # fmt: skip


def test_a_model_must_read_the_datas_image_size():
    with pytest.raises(AAEError, match=r"the model reads images of 784 values, synthetic's have 16 \(4x4\): "
                                       r"build it with in_dim=16, image_shape=\(4, 4\)"):
        fit(tiny_model(), _data(), tiny_train(batch_size=10), progress=False)
    with pytest.raises(AAEError, match=r"the model views images as 2x8, synthetic's are 4x4: build it with "
                                       r"image_shape=\(4, 4\)"):  # its plots would tile them wrongly
        fit(tiny_model(in_dim=16, image_shape=(2, 8)), _data(), tiny_train(batch_size=10), progress=False)
    # Flat images (a .npz of (n, d)) may be viewed as 4x4 images in the plots:
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), _data(image_shape=(16,)), tiny_train(batch_size=10), progress=False)


def test_a_dataset_shows_its_sizes_not_its_tensors():
    assert repr(_data()) == "Dataset('synthetic', train=40, val=None, test=10, image_shape=(4, 4), num_classes=3)"


def test_a_semi_supervised_model_must_have_the_datas_classes():
    torch.manual_seed(0)
    model = SemiSupervisedAAE(16, (4, 4), n_classes=5, z_dim=2, hidden=16, disc_hidden=16)
    config = Config("semi-supervised", DataConfig(labels="30"))
    with pytest.raises(AAEError, match="synthetic has 3 classes, the model 5"):
        fit(model, synthetic_dataset(60, test=10), tiny_train(batch_size=20), config=config, progress=False)


def test_a_bench_seed_killed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch, mnist):
    from conftest import subset_of

    import torch_aae.data as data_module
    from torch_aae import bench

    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: subset_of(mnist, 300, 100))
    config = Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32),
                    tiny_train())  # fmt: skip
    seed_run = tmp_path / "seed-0"
    seed_run.mkdir()
    (seed_run / "config.json").write_text(json.dumps(config.to_dict()))  # what a SIGKILL in epoch 1 leaves
    result = bench.bench_seeds(config, 1, tmp_path, "aae bench clustering ...", progress=False)
    assert len(result["test_cluster_error"]) == 1 and (seed_run / "summary.json").is_file()


def test_a_run_recorded_with_a_relative_npz_path_still_resumes(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savez("toy.npz", x=np.random.default_rng(0).random((40, 4, 4)).astype(np.float32))
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), load_dataset("toy.npz"), tiny_train(batch_size=20),
        out="run", progress=False)  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["dataset"] == str(tmp_path / "toy.npz")
    config["data"]["dataset"] = "toy.npz"  # as a run of an earlier version recorded it
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert cli.main(["train", "unsupervised", "--out", "run", "--resume", "--epochs", "2", "--no-progress"]) == 0


class _UsersPrior:
    dim = 2

    def sample(self, n, labels=None):
        return torch.zeros(n, 2)

    def __repr__(self):
        return "<users prior>"


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: ClusteringAAE(16, (4, 4), n_classes=1), "n_classes 1: a categorical code needs at least 2"),
        (lambda: SemiSupervisedAAE(16, (4, 4), hidden=0), "layer widths [16, 0, 0]: each must be a positive integer"),
        (lambda: SemiSupervisedAAE(16, (4, 4), dropout=1.5), "dropout probability must be in [0, 1)"),
        # Dropped without a word before (the run's config recorded the default):
        (lambda: UnsupervisedAAE(16, (4, 4), prior="gaussian", prior_scale=9.0),
         "prior_scale=9.0: prior='gaussian' does not read it; only the uniform, mixture, swiss-roll priors do"),
        (lambda: UnsupervisedAAE(16, (4, 4), prior=GaussianPrior(2, 3.0), prior_components=5),
         "prior_components=5 given with prior=GaussianPrior(dim=2, std=3.0), which has its own"),
        (lambda: UnsupervisedAAE(16, (4, 4), prior=GaussianPrior(3, 3.0)),
         "prior GaussianPrior(dim=3, std=3.0): dim 3, the model's z_dim 2"),
        # Refused by fit before, after the build, in the command line's words:
        (lambda: UnsupervisedAAE(16, (4, 4), prior=_UsersPrior(), prior_std=3.0),
         "prior_std=3.0: prior=<users prior> does not read it; only the gaussian prior does"),
        (lambda: UnsupervisedAAE(16, (4, 4), prior="mixture", condition_labels=True),
         "condition_labels True: must be an integer >= 0"),
        (lambda: SupervisedAAE(16, (4, 4), prior="mixture"),  # refused by fit before, after the build
         "prior='mixture': the supervised model's prior is the Gaussian N(0, prior_std²)"),
    ],
)
def test_a_model_built_by_hand_refuses_impossible_arguments(build, fragment):
    with pytest.raises(AAEError) as err:
        build()
    assert fragment in str(err.value)


def test_a_run_on_a_hand_built_dataset_asks_for_it_instead_of_loading_another(mnist, tmp_path, capsys):
    data = subset_of(mnist, 200, 100)  # named "mnist" but built by hand: not MNIST's 10,000 test images
    run = tmp_path / "run"
    summary = fit(tiny_model(), data, tiny_train(), out=run, progress=False)
    record = json.loads((run / "data.json").read_text())
    assert record == {"made_by": "python", "name": "mnist", "train": 200, "val": 0, "test": 100,
                      "sha1": data_digest(data)}  # fmt: skip
    for call in (evaluate_run, plot_run, encode_run):
        with pytest.raises(AAEError, match=r"trained on a Dataset built in Python \('mnist', 200 training "
                                           r"images\), which its config cannot load again; pass that Dataset"):
            call(run)
    assert evaluate_run(run, data=data)["test_recon_bce"] == pytest.approx(summary["test_recon_bce"], rel=1e-6)
    assert len(encode_run(run, data=data)["z"]) == 100 and plot_run(run, data=data)
    with pytest.raises(AAEError, match="data: a dict; give the Dataset the run trained on"):
        evaluate_run(run, data={})
    with pytest.raises(AAEError, match=r"these are not the images it trained on \(150 training images \(it "
                                       r"trained on 200\); data.json\)"):
        evaluate_run(run, data=subset_of(mnist, 150, 100))
    assert cli.main(["train", "unsupervised", "--out", str(run), "--resume", "--epochs", "2"]) == 1
    assert "continue it from Python with that Dataset: fit(..., out=RUN, resume=True)" in capsys.readouterr().err
    assert cli.main(["encode", str(run), "--out", str(tmp_path / "c.npz")]) == 1
    assert "encode images of your own with --images FILE.npz" in capsys.readouterr().err
    (run / "data.json").unlink()  # as a run made before data.json: not checked, and recorded on resume
    resumed = fit(tiny_model(), data, tiny_train(epochs=2), out=run, resume=True, progress=False)
    assert resumed["epochs"] == 2 and json.loads((run / "data.json").read_text()) == record


def test_a_npz_changed_after_training_is_refused_where_the_run_loads_it_again(tmp_path, capsys):
    import numpy as np

    x = np.random.default_rng(0).random((60, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "own.npz", x=x, x_test=x[:10])
    run = tmp_path / "run"
    data = load_dataset(str(tmp_path / "own.npz"))
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=20), out=run, progress=False)
    assert "test_recon_bce" in evaluate_run(run)
    with pytest.raises(AAEError, match=r"--data-dir /elsewhere: the run trained on /.*own\.npz, not on files in a data folder"):
        evaluate_run(run, data_dir="/elsewhere")
    np.savez(tmp_path / "own.npz", x=x[:50], x_test=x[:10])  # the file rewritten with other images
    with pytest.raises(AAEError, match=r"these are not the images it trained on \(50 training images \(it trained on 60\)"):
        evaluate_run(run)
    np.savez(tmp_path / "own.npz", x=x[::-1], x_test=x[:10])  # the same sizes, other order
    with pytest.raises(AAEError, match=r"not the images it trained on \(the same sizes, other values; data.json\): "
                                       r"its data file changed since"):
        evaluate_run(run)
    assert cli.main(["train", "unsupervised", "--out", str(run), "--resume", "--epochs", "2"]) == 1
    assert "these are not the images it trained on" in capsys.readouterr().err
    assert cli.main(["train", "unsupervised", "--out", str(run), "--resume", "--data-dir", "/x"]) == 1
    assert "--data-dir /x: the run trained on" in capsys.readouterr().err
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"] == 1  # not trained on


def test_a_dataset_edited_after_load_dataset_is_not_taken_for_its_files(tmp_path, capsys):
    data = load_dataset("mnist", REPO_ROOT / "data", subset=200)
    data.train_x, data.test_x = 1 - data.train_x, 1 - data.test_x  # inverted images, same files named
    run = tmp_path / "run"
    summary = fit(tiny_model(), data, tiny_train(), out=run, progress=False)
    with pytest.raises(AAEError, match=r"not the images it trained on \(the same sizes, other values; data.json\): "
                                       r"its data file changed since, or the Dataset it trained on was built or "
                                       r"edited in Python \(pass that one as data=\.\.\.\)"):
        evaluate_run(run)  # would score plain MNIST
    assert cli.main(["evaluate", str(run)]) == 1 and "not the images it trained on" in capsys.readouterr().err
    assert evaluate_run(run, data=data)["test_recon_bce"] == pytest.approx(summary["test_recon_bce"], rel=1e-6)
