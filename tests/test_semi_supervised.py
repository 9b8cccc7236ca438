"""The semi-supervised AAE: phases, label sampling, the categorical prior, no test leakage."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import (
    AdversarialRecorder,
    assert_adversarial_phases_match_the_hand_computation,
    assert_cat_noise_in_both_phases,
    subset_of,
    tiny_train,
)

from torch_aae import semi_supervised as semi
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.data import cycled_batch
from torch_aae.errors import AAEError, AAEWarning
from torch_aae.train import fit


def tiny_semi(seed: int = 0, **kw) -> semi.SemiSupervisedAAE:
    args = dict(z_dim=2, hidden=32, depth=2, disc_hidden=32, disc_depth=2, dropout=0.0)
    args.update(kw)
    torch.manual_seed(seed)
    return semi.SemiSupervisedAAE(784, (28, 28), 10, **args)


def semi_config(labels="100", seed=0, **train) -> Config:
    return Config("semi-supervised", DataConfig(labels=labels), ModelConfig(z_dim=2),
                  tiny_train(seed=seed, **train))  # fmt: skip


@pytest.fixture
def data(mnist):
    return subset_of(mnist, 1000, 300)


def test_setup_draws_balanced_labels_reproducibly_and_saves_them(data, tmp_path):
    model = tiny_semi()
    config = semi_config("100", seed=3)
    ctx = semi.setup(model, data, config, "cpu", tmp_path / "run")
    assert not (tmp_path / "run").exists()  # setup writes nothing: fit writes its run_files
    fit(model, data, config.train, out=tmp_path / "run", config=config, progress=False)
    saved = json.loads((tmp_path / "run" / "labeled_indices.json").read_text())
    assert saved == ctx["run_files"]["labeled_indices.json"]
    assert len(saved) == 100 and len(set(saved)) == 100
    assert torch.equal(ctx["y"], data.train_y[saved])
    assert torch.bincount(ctx["y"], minlength=10).tolist() == [10] * 10
    again = semi.setup(model, data, semi_config("100", seed=3), "cpu", None)
    other = semi.setup(model, data, semi_config("100", seed=4), "cpu", None)
    assert torch.equal(again["x"], ctx["x"])
    assert not torch.equal(other["x"], ctx["x"])


def test_data_seed_keeps_the_labeled_images_while_the_seed_varies(data):
    model = tiny_semi()

    def drawn(seed, data_seed=None):
        config = Config("semi-supervised", DataConfig(labels="100", data_seed=data_seed),
                        ModelConfig(z_dim=2), tiny_train(seed=seed))  # fmt: skip
        return semi.setup(model, data, config, "cpu", None)["run_files"]["labeled_indices.json"]

    assert drawn(0, data_seed=7) == drawn(1, data_seed=7) == drawn(7)  # default: --seed
    assert drawn(0) != drawn(1)


def test_bench_seeds_with_a_data_seed_share_the_split_and_the_labels(data, tmp_path, monkeypatch):
    from torch_aae import bench

    import torch_aae.data as data_module

    split_seeds = []

    def load(name, data_dir, subset, val_size, seed):
        split_seeds.append(seed)
        return data_module.split_validation(subset_of(data, 600, 200), val_size, seed)

    monkeypatch.setattr(data_module, "load_dataset", load)
    for data_seed, out in ((5, tmp_path / "fixed"), (None, tmp_path / "default")):
        config = Config("semi-supervised", DataConfig(labels="100", val_size=100, data_seed=data_seed),
                        ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
        bench.bench_seeds(config, 2, out, "aae bench ...", progress=False)
    assert split_seeds == [5, 5, 0, 1]
    labeled = {(out, seed): json.loads((tmp_path / out / f"seed-{seed}" / "labeled_indices.json").read_text())
               for out in ("fixed", "default") for seed in (0, 1)}  # fmt: skip
    assert labeled["fixed", 0] == labeled["fixed", 1]
    assert labeled["default", 0] != labeled["default", 1]


def test_confusion_matrix_counts_true_classes_in_rows_and_predictions_in_columns():
    model = tiny_semi()
    x = torch.zeros(6, 784)
    x[:, 0] = torch.tensor([0.0, 1, 2, 2, 2, 1])  # the "prediction", read by the stub below
    model.classify = lambda xb: xb[:, 0].long()
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    counts = semi.confusion_matrix(model, x, y, "cpu", batch_size=4)
    expected = torch.zeros(10, 10, dtype=torch.long)
    for true, pred in [(0, 0), (1, 1), (2, 2), (2, 2), (1, 2), (0, 1)]:
        expected[true, pred] += 1
    assert torch.equal(counts, expected)


def test_labeled_batches_cycle_through_every_labeled_image():
    seen = torch.cat([cycled_batch(100, 30, seed=0, step=s) for s in range(3)])
    assert len(seen) == 90 and len(set(seen.tolist())) == 90  # one pass: no repeats
    assert torch.equal(cycled_batch(100, 30, 0, 7), cycled_batch(100, 30, 0, 7))  # pure function


def test_step_inputs_are_the_labeled_batches_of_those_steps():
    ctx = {"x": torch.zeros(100, 4), "batch_size": 30, "seed": 2}
    rows = semi.step_inputs(ctx, 5, 4)["labeled_idx"]  # drawn ahead for steps 5..8
    assert rows.shape == (4, 30)
    for i in range(4):
        assert torch.equal(rows[i], cycled_batch(100, 30, 2, 5 + i))
    assert semi.step_inputs({"x": None}, 0, 3) == {}  # no labeled images: nothing to draw


class StepRecorder:
    """Which parameters each phase's optimizer step changed, in the order the steps ran."""

    def __init__(self, model, optimizers):
        self.model, self.order, self.changed, self.before = model, [], {}, {}
        for phase, opt in optimizers.items():
            opt.register_step_pre_hook(lambda o, a, k, phase=phase: self._pre(phase))
            opt.register_step_post_hook(lambda o, a, k, phase=phase: self._post(phase))

    def _pre(self, phase):
        self.order.append(phase)
        self.before = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _post(self, phase):
        self.changed[phase] = {n for n, p in self.model.named_parameters()
                               if not torch.equal(p, self.before[n])}  # fmt: skip


def _names(model, *prefixes):
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.fixture
def recorded(data):
    model = tiny_semi().train()
    optimizers = semi.make_optimizers(model, tiny_train(lr_recon=1e-2, lr_reg=1e-2, lr_sup=1e-2))
    rec = StepRecorder(model, optimizers)
    ctx = semi.setup(model, data, semi_config(), "cpu", None)
    torch.manual_seed(0)
    logs = semi.train_step(model, optimizers, data.train_x[:50], None, ctx, 0)
    return model, rec, logs


def test_phases_run_in_the_papers_order(recorded):
    assert recorded[1].order == ["recon", "disc", "gen", "sup"]


@pytest.mark.parametrize(
    "phase, owners",
    [
        ("recon", ("encoder.", "decoder.")),
        ("disc", ("label_discriminator.", "latent_discriminator.")),
        ("gen", ("encoder.",)),
        ("sup", ("encoder.trunk.", "encoder.class_head.")),  # the encoder only, not the style head
    ],
)
def test_each_phase_changes_only_its_own_parameters(recorded, phase, owners):
    model, rec, _ = recorded
    assert rec.changed[phase] == _names(model, *owners)


def test_step_logs_every_loss_as_finite_tensors(recorded):
    logs = recorded[2]
    for key in ("loss/recon", "loss/disc_cat", "loss/disc_gauss", "loss/gen", "loss/sup"):
        assert logs[key].dim() == 0 and torch.isfinite(logs[key])


def test_categorical_discriminator_sees_one_hot_prior_samples(data):
    model = tiny_semi()
    optimizers = semi.make_optimizers(model, tiny_train())
    ctx = semi.setup(model, data, semi_config(), "cpu", None)
    inputs = []
    model.label_discriminator.register_forward_hook(lambda m, a, out: inputs.append(a[0].detach()))
    torch.manual_seed(0)
    for step in range(4):
        semi.train_step(model, optimizers, data.train_x[step * 100 : (step + 1) * 100], None, ctx, step)
    assert len(inputs) == 8  # per step: the discriminator phase's pass, the generator phase's
    halves = [t.chunk(2) for t in inputs[0::2]]  # (prior samples, codes) in one pass
    parts = [h for pair in halves for h in pair] + inputs[1::2]
    one_hot = [t for t in parts if torch.all((t == 0) | (t == 1)) and torch.all(t.sum(1) == 1)]
    soft = [t for t in parts if not torch.all((t == 0) | (t == 1))]
    assert len(one_hot) == 4 and all(torch.equal(t, h[0]) for t, h in zip(one_hot, halves))
    assert len(soft) == 8  # softmax(y) codes, in the discriminator and generator phases
    counts = torch.cat(one_hot).argmax(1).bincount(minlength=10)
    assert counts.min() > 15  # uniform over the 10 classes (400 draws, 40 expected each)


def test_no_test_image_reaches_training(data, monkeypatch):
    seen = []
    original = semi.train_step

    def spy(model, opt, x, y, ctx, step):
        seen.append(x)
        seen.append(ctx["x"])
        return original(model, opt, x, y, ctx, step)

    monkeypatch.setattr(semi, "train_step", spy)
    model = tiny_semi()
    fit(model, data, tiny_train(epochs=1, batch_size=100), config=semi_config(), progress=False)
    trained_on = {tuple(row.tolist()) for row in torch.cat(seen).unique(dim=0)}
    test_rows = {tuple(row.tolist()) for row in data.test_x}
    train_rows = {tuple(row.tolist()) for row in data.train_x}
    assert trained_on <= train_rows
    assert not trained_on & test_rows


def test_short_run_learns_to_classify_and_reports_test_error(data, tmp_path):
    model = tiny_semi(hidden=64, disc_hidden=32)
    config = semi_config("100", epochs=4, batch_size=50)
    summary = fit(model, data, config.train, out=tmp_path / "run", config=config, progress=False)
    assert 0 <= summary["test_error"] < 0.6  # chance is 0.9
    assert {"test_recon_bce", "prior_mean_abs_max", "epochs"} <= set(summary)
    # The per-class errors, weighted by the classes' shares of the test set, make up the error.
    shares = torch.bincount(data.test_y, minlength=10).double() / len(data.test_y)
    per_class = torch.tensor([summary[f"test_error_class_{k}"] for k in range(10)], dtype=torch.float64)
    assert float((shares * per_class).sum()) == pytest.approx(summary["test_error"], abs=1e-6)
    for name in ("latent.png", "style_grid.png", "samples.png", "losses.png", "confusion.png"):
        assert (tmp_path / "run" / "plots" / name).stat().st_size > 1000


def test_validation_error_is_logged_per_epoch_when_a_split_exists(data, tmp_path):
    from torch_aae.logger import read_history

    data.val_x, data.val_y = data.train_x[:200], data.train_y[:200]
    model = tiny_semi()
    fit(model, data, tiny_train(epochs=2), config=semi_config(epochs=2), out=tmp_path / "run", progress=False)
    history = read_history(tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2] and all("eval/val_error" in row for row in history)
    # The last epoch's figure is the final weights' error on the validation images (not the test's).
    model.eval()
    with torch.no_grad():
        wrong = (model.encoder.classify(data.val_x).argmax(1) != data.val_y).float().mean().item()
        on_test = (model.encoder.classify(data.test_x).argmax(1) != data.test_y).float().mean().item()
    assert history[-1]["eval/val_error"] == pytest.approx(wrong, abs=1e-6) and wrong != on_test


def test_bench_seeds_reports_mean_and_std(data, tmp_path, monkeypatch):
    from torch_aae import bench

    import torch_aae.data as data_module

    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: subset_of(data, 500, 200))
    config = Config("semi-supervised", DataConfig(labels="100"),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    result = bench.bench_seeds(config, 2, tmp_path, "aae bench ...", progress=False)
    assert result["seeds"] == [0, 1] and len(result["test_error"]) == 2
    mean = sum(result["test_error"]) / 2
    assert result["test_error_mean"] == pytest.approx(mean)
    assert result["test_error_std"] == pytest.approx(abs(result["test_error"][0] - mean) * 2**0.5)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["test_error_mean"] == result["test_error_mean"]
    assert "| semi-supervised | 100 | 2 |" in (tmp_path / "bench.md").read_text()
    # Each call is recorded: the seeds it trained, with its own command and jobs.
    again = bench.bench_seeds(config, 3, tmp_path, "aae bench ... --seeds 3", progress=False)
    assert [(c["command"], c["jobs"], c["trained"]) for c in again["calls"]] == [
        ("aae bench ...", 1, [0, 1]), ("aae bench ... --seeds 3", 1, [2])]
    assert again["seeds"] == [0, 1, 2] and again["test_error"][:2] == result["test_error"]
    assert again["left_out"] == []
    # Fewer seeds: the table is of those, and says which seed folders it leaves out.
    with pytest.warns(AAEWarning, match=r"seed-1, seed-2 outside --seed 0 --seeds 1, left out of the table"):
        fewer = bench.bench_seeds(config, 1, tmp_path, "aae bench ... --seeds 1", progress=False)
    assert fewer["seeds"] == [0] and fewer["left_out"] == [1, 2]


def test_a_seed_resumed_with_more_epochs_and_unfinished_is_trained_on_not_taken_as_done(tmp_path):
    """`aae train --resume --epochs 2` on a bench seed rewrites its config.json at once; stopped
    before its end, it kept the 1-epoch summary.json, which the bench took as the 2-epoch result."""
    from torch_aae import bench

    def config(epochs):
        return Config("semi-supervised", DataConfig(labels="100", subset=600),
                      ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=epochs))  # fmt: skip

    bench.bench_seeds(config(1), 1, tmp_path, "aae bench ...", progress=False)
    recorded = json.loads((tmp_path / "seed-0" / "config.json").read_text())
    recorded["train"]["epochs"] = 2  # as the stopped resume left it
    (tmp_path / "seed-0" / "config.json").write_text(json.dumps(recorded))
    result = bench.bench_seeds(config(2), 1, tmp_path, "aae bench ... --epochs 2", progress=False)
    assert result["runs"][0]["epochs"] == 2 and result["calls"][-1]["trained"] == [0]
    assert json.loads((tmp_path / "seed-0" / "summary.json").read_text())["epochs"] == 2


def test_bench_seeds_in_parallel_jobs_match_one_by_one(tmp_path):
    # Two worker processes (spawned: they load the data themselves, from a small subset) give
    # the same per-seed errors as training the seeds one after the other.
    from torch_aae import bench

    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32, dropout=0.0),
                    tiny_train(epochs=1))  # fmt: skip
    parallel = bench.bench_seeds(config, 2, tmp_path / "par", "aae bench ...", progress=False, jobs=2)
    serial = bench.bench_seeds(config, 2, tmp_path / "ser", "aae bench ...", progress=False)
    assert parallel["seeds"] == serial["seeds"] == [0, 1]
    assert parallel["test_error"] == serial["test_error"]


def test_bench_seeds_refuses_a_folder_holding_another_config(tmp_path):
    from torch_aae import bench
    from torch_aae.errors import AAEError

    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)
    before = (tmp_path / "seed-0" / "summary.json").read_bytes()
    other = Config("semi-supervised", DataConfig(labels="100", subset=600),
                   ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1, lr_sup=0.5))  # fmt: skip
    with pytest.raises(AAEError, match=r"seed-0 holds a run with train.lr_sup=0.001, not 0.5"):
        bench.bench_seeds(other, 1, tmp_path, "aae bench ...", progress=False)
    assert (tmp_path / "seed-0" / "summary.json").read_bytes() == before


@pytest.mark.parametrize("content, message", [
    ({"config.json": "{}", "metrics.jsonl": ""}, r"holds a training run"),
    ({"notes.txt": "mine"}, r"holds 'notes.txt', which no bench writes"),
])
def test_bench_seeds_refuses_a_folder_that_is_not_a_benchs(tmp_path, content, message):
    # A bench written into a training run's folder would be deleted with it by --overwrite.
    from torch_aae import bench
    from torch_aae.errors import AAEError

    for name, text in content.items():
        (tmp_path / name).write_text(text)
    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    with pytest.raises(AAEError, match=message):
        bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(content)


@pytest.mark.parametrize("content, error", [('{"seeds": [0', r"unreadable \("),
                                            ("[1]", r"a JSON list, not the object a bench or run writes$")])
@pytest.mark.parametrize("damaged", ["bench.json", "seed-0/config.json", "seed-0/summary.json"])
def test_a_bench_names_a_damaged_file_of_its_folder_before_training(tmp_path, damaged, content, error):
    """A truncated bench.json, or a seed's config.json or summary.json, ended the bench in a
    JSONDecodeError traceback (bench.json's only after every seed had trained), one holding
    a JSON list in an AttributeError."""
    from torch_aae import bench
    from torch_aae.errors import AAEError

    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / damaged).write_text(content)
    with pytest.raises(AAEError, match=rf"^{re.escape(str(tmp_path / damaged))}: {error}"):
        bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)
    assert sorted(p.name for p in (tmp_path / "seed-0").iterdir()) == sorted(
        ["config.json"] + (["summary.json"] if damaged == "seed-0/summary.json" else []))  # nothing trained


def test_a_bench_folder_of_another_model_is_named_as_such(tmp_path):
    from torch_aae import bench
    from torch_aae.errors import AAEError

    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "config.json").write_text(json.dumps({"model_kind": "clustering", "data": {}}))
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(), tiny_train(epochs=1))
    with pytest.raises(AAEError, match=r"seed-0 holds a run of the clustering model, not semi-supervised"):
        bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)


def test_an_interrupted_bench_says_to_run_it_again(tmp_path, monkeypatch):
    # A seed's training stopped by a signal says "aae train ... --resume"; a bench has no
    # --resume: its own command, run again, continues.
    from torch_aae import bench
    from torch_aae.errors import Interrupted

    def interrupted(config, run, progress, threads=None):
        raise Interrupted(f"interrupted at epoch 1, step 3; continue with `aae train ... --out {run} --resume`")

    monkeypatch.setattr(bench, "_train_seed", interrupted)
    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    with pytest.raises(Interrupted, match=r"^interrupted; .* run the same `aae bench` command again"):
        bench.bench_seeds(config, 2, tmp_path, "aae bench ...", progress=False)


def test_bench_seeds_accepts_a_run_saved_before_a_field_existed(tmp_path):
    # A finished run whose config.json lacks a field added later (here: precision) counts as
    # that field's default, so the benchmark collects it instead of refusing it.
    from torch_aae import bench

    config = Config("semi-supervised", DataConfig(labels="100", subset=600),
                    ModelConfig(z_dim=2, hidden=32, disc_hidden=32), tiny_train(epochs=1))  # fmt: skip
    first = bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)
    saved = json.loads((tmp_path / "seed-0" / "config.json").read_text())
    del saved["train"]["precision"]
    (tmp_path / "seed-0" / "config.json").write_text(json.dumps(saved))
    again = bench.bench_seeds(config, 1, tmp_path, "aae bench ...", progress=False)
    assert again["test_error"] == first["test_error"]


def test_label_shift_moves_the_labeled_images_of_the_supervised_phase(data):
    model = tiny_semi().train()
    optimizers = semi.make_optimizers(model, tiny_train())
    ctx = semi.setup(model, data, semi_config(label_shift=2), "cpu", None)
    seen = []
    classify = model.encoder.classify
    model.encoder.classify = lambda x: seen.append(x.detach().clone()) or classify(x)
    torch.manual_seed(0)
    semi.train_step(model, optimizers, data.train_x[:50], None, ctx, 0)
    idx = cycled_batch(len(ctx["x"]), ctx["batch_size"], ctx["seed"], 0)
    clean = ctx["x"][idx]
    assert not torch.equal(seen[0], clean)
    for moved, image in zip(seen[0].view(-1, 28, 28), clean.view(-1, 28, 28)):  # each a translated copy
        assert any(torch.equal(moved, _shifted(image, dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3))


def test_label_elastic_reaches_the_supervised_phase_with_its_sigma(data, monkeypatch):
    model = tiny_semi().train()
    optimizers = semi.make_optimizers(model, tiny_train())
    ctx = semi.setup(model, data, semi_config(label_rotate=5.0, label_elastic=7.0, label_elastic_sigma=3.0),
                     "cpu", None)  # fmt: skip
    calls = []
    affine = semi.random_affine
    monkeypatch.setattr(semi, "random_affine", lambda *a, **k: calls.append(a[2:]) or affine(*a, **k))
    semi.train_step(model, optimizers, data.train_x[:50], None, ctx, 0)
    assert calls == [(5.0, 0.0, 0.0, 7.0, 3.0)]  # rotate, scale, shift, elastic, sigma


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """image (h, w) moved by (dy, dx) pixels, zeros moved in."""
    out = torch.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


@pytest.mark.parametrize("flag", ["label_shift", "label_rotate", "label_scale", "label_elastic"])
def test_label_augmentation_is_refused_by_other_models_and_checked(flag):
    value = 2.0 if flag == "label_shift" else 0.5  # a shift alone is whole pixels
    with pytest.raises(AAEError, match=f"--{flag.replace('_', '-')} {value}: the clustering model does not take it"):
        Config("clustering", DataConfig(), ModelConfig(), tiny_train(**{flag: value}))
    with pytest.raises(AAEError, match="must be >= 0"):
        tiny_train(**{flag: -1.0})


def test_label_scale_and_fractional_shift_alone_are_refused():
    with pytest.raises(AAEError, match="--label-scale 1.0: must be below 1"):
        tiny_train(label_scale=1.0)
    with pytest.raises(AAEError, match="alone, it moves whole pixels"):
        tiny_train(label_shift=1.5)
    assert tiny_train(label_shift=1.5, label_rotate=10.0).label_shift == 1.5  # with a rotation: any offset


def test_label_elastic_sigma_is_checked_and_needs_label_elastic():
    with pytest.raises(AAEError, match="--label-elastic-sigma 0.0: must be > 0"):
        tiny_train(label_elastic=34.0, label_elastic_sigma=0.0)
    from torch_aae.config import Config

    with pytest.raises(AAEError, match="--label-elastic is 0"):  # checked with the model known
        Config("semi-supervised", train=tiny_train(label_elastic_sigma=3.0))
    assert tiny_train(label_elastic=34.0, label_elastic_sigma=3.0).label_elastic_sigma == 3.0


@pytest.mark.parametrize("eval_codes", [False, True])
def test_adv_eval_codes_turns_dropout_off_for_the_discriminator_and_generator_phases(eval_codes):
    model = tiny_semi()
    opt = semi.make_optimizers(model, tiny_train())
    drop = [m for m in model.encoder.modules() if isinstance(m, semi.Dropout)][0]
    seen = []
    forward = model.encoder.forward
    model.encoder.forward = lambda x: seen.append(drop.training) or forward(x)
    semi.adversarial_autoencoder_phases(model, opt, torch.rand(8, 784), 0.3, eval_codes=eval_codes)
    assert seen == [True, not eval_codes]  # reconstruction pass, then phases 2-3's pass
    assert drop.training  # back on for the next step's reconstruction


def test_adv_eval_codes_is_refused_by_the_models_without_a_categorical_code():
    with pytest.raises(AAEError, match="--adv-eval-codes: the unsupervised model does not take it"):
        Config("unsupervised", train=tiny_train(adv_eval_codes=True))
    assert semi_config(adv_eval_codes=True).train.adv_eval_codes


# ----------------------------------------------------------------------------------------------
# The adversarial phases (shared with the clustering model): losses, gradients, logged
# accuracies and noises, against what the paper's losses give computed by hand


def test_one_steps_adversarial_losses_gradients_and_accuracies_are_the_papers(data):
    """The discriminators minimize -log D(prior draw) - log(1 - D(code)) (prior = real), the
    encoder -log D(code) for both codes; a loss with real and fake swapped, or with a sign
    flipped, still trains, just the wrong way round."""
    model = tiny_semi()
    optimizers = semi.make_optimizers(model, tiny_train(lr_reg=1e-2))
    ctx = semi.setup(model, data, semi_config(), "cpu", None)  # no input, code or cat noise
    x = data.train_x[:50]
    rec = AdversarialRecorder(model, optimizers, x)
    torch.manual_seed(0)
    logs = semi.train_step(model, optimizers, x, None, ctx, 0)
    assert len(rec.cat) == len(rec.gauss) == 2  # the discriminator phase's pass, the generator's
    assert_adversarial_phases_match_the_hand_computation(rec, logs)


def test_cat_noise_reaches_the_label_discriminator_in_both_phases(data):
    """--cat-noise s: the categorical discriminator reads one-hot draws + N(0, s^2) and
    softmax(y) + N(0, s^2), in the discriminator phase and (fresh noise) in the generator's."""
    model = tiny_semi()
    optimizers = semi.make_optimizers(model, tiny_train())
    ctx = semi.setup(model, data, semi_config(cat_noise=0.1), "cpu", None)
    step = lambda: semi.train_step(model, optimizers, data.train_x[:200], None, ctx, 0)  # noqa: E731
    assert_cat_noise_in_both_phases(model, step, 200, 0.1)


def test_code_noise_makes_a_gaussian_posterior_for_decoder_and_discriminator(data):
    """--code-noise s: the decoder and the Gaussian discriminator get z = style head + N(0, s^2)."""
    model = tiny_semi(z_dim=8)
    optimizers = semi.make_optimizers(model, tiny_train())
    ctx = semi.setup(model, data, semi_config(code_noise=2.0), "cpu", None)
    styles, decoded, judged = [], [], []
    model.encoder.register_forward_hook(lambda m, a, out: styles.append(out[1].detach()))
    model.decoder.register_forward_hook(lambda m, a, out: decoded.append(a[0].detach()))
    model.latent_discriminator.register_forward_hook(lambda m, a, out: judged.append(a[0].detach()))
    torch.manual_seed(0)
    semi.train_step(model, optimizers, data.train_x, None, ctx, 0)  # 1,000 x 8 draws: the std to 5% (6 s.e.)
    assert len(styles) == 2 and len(decoded) == 1 and len(judged) == 2
    recon_noise = decoded[0][:, 10:] - styles[0]  # after the 10 class probabilities
    disc_noise = judged[0][1000:] - styles[1]  # after the prior's draws
    for noise in (recon_noise, disc_noise):
        assert noise.std().item() == pytest.approx(2.0, rel=0.05)
    assert torch.equal(judged[1], judged[0][1000:])  # the generator phase reads the same noisy z


def _set_lr(opt, lr):
    for group in opt.param_groups:
        group["lr"] = lr


def _held_out_accuracies(model, x):
    """Each discriminator's (prior draws called real, codes called fake) on held-out images."""
    model.eval()
    with torch.no_grad():
        torch.manual_seed(123)
        logits, z = model.encoder(x)
        cat_real = model.label_discriminator(semi.sample_one_hot(len(x), model.n_classes, "cpu"))
        cat_fake = model.label_discriminator(logits.softmax(1))
        gauss_real, gauss_fake = model.latent_discriminator(model.prior.sample(len(x))), model.latent_discriminator(z)
    model.train()
    return {"cat": ((cat_real > 0).float().mean().item(), (cat_fake < 0).float().mean().item()),
            "gauss": ((gauss_real > 0).float().mean().item(), (gauss_fake < 0).float().mean().item())}


def test_both_discriminators_learn_and_the_generator_fools_them(data):
    model = tiny_semi(hidden=64, disc_hidden=64)
    opts = semi.make_optimizers(model, tiny_train(lr_reg=1e-3))
    ctx = semi.setup(model, data, semi_config(), "cpu", None)
    train_x, test_x = data.train_x[:500], data.test_x
    # Step A: the generator frozen, the discriminators learn to tell codes from prior draws,
    # on the step's own batches (the logged accuracies) and on held-out images.
    _set_lr(opts["gen"], 0.0)
    torch.manual_seed(0)
    logs = [semi.train_step(model, opts, xb, None, ctx, s) for s, xb in enumerate(train_x.split(50) * 3)]
    for d in ("cat", "gauss"):
        last = [(row[f"acc/disc_{d}_real"] + row[f"acc/disc_{d}_fake"]).item() / 2 for row in logs[-10:]]
        assert sum(last) / len(last) > 0.75, d
    before = _held_out_accuracies(model, test_x)
    assert all(sum(before[d]) / 2 > 0.75 for d in before), before
    # Step B: the discriminators, the reconstruction and the classifier frozen, the generator
    # phase alone moves both codes until each discriminator calls most of them real.
    _set_lr(opts["gen"], 1e-3), _set_lr(opts["disc"], 0.0), _set_lr(opts["recon"], 0.0), _set_lr(opts["sup"], 0.0)
    for s, xb in enumerate(train_x.split(50)):
        semi.train_step(model, opts, xb, None, ctx, s)
    after = _held_out_accuracies(model, test_x)
    for d in ("cat", "gauss"):
        assert after[d][0] == before[d][0], d  # the discriminator did not change
        assert after[d][1] < before[d][1] - 0.5, (d, before, after)
