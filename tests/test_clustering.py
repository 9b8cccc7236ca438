"""Unsupervised clustering: the paper's cluster error (known answers) and the model's phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    REPO_ROOT,
    AdversarialRecorder,
    assert_adversarial_phases_match_the_hand_computation,
    assert_cat_noise_in_both_phases,
    subset_of,
    tiny_train,
)

from torch_aae import clustering
from torch_aae.config import Config, DataConfig, ModelConfig, refuse_unread
from torch_aae.errors import AAEError
from torch_aae.train import fit


def test_perfect_clusters_give_zero_error_whatever_their_numbering():
    rng = np.random.default_rng(0)
    labels = rng.integers(10, size=2000)
    relabel = rng.permutation(16)[:10]  # class c -> cluster relabel[c]
    assert clustering.cluster_error(relabel[labels], labels, relabel[labels[:500]], labels[:500], 16) == 0.0


def test_a_class_split_over_two_clusters_still_gives_zero():
    labels = np.repeat(np.arange(10), 100)
    clusters = labels * 2 + np.arange(1000) % 2  # every class split in two clusters
    assert clustering.cluster_error(clusters, labels, clusters, labels, 20) == 0.0


def test_random_clusters_give_about_chance():
    rng = np.random.default_rng(1)
    labels = rng.integers(10, size=20000)
    err = clustering.cluster_error(rng.integers(16, size=20000), labels,
                                   rng.integers(16, size=10000), labels[:10000], 16)  # fmt: skip
    assert 0.85 < err < 0.93  # chance is 0.9 (a majority label of random members is ~ any class)


def test_two_merged_classes_cost_the_smaller_one():
    labels = np.array([0] * 60 + [1] * 40)
    clusters = np.zeros(100, dtype=int)  # one cluster holds both classes: it takes label 0
    assert clustering.cluster_error(clusters, labels, clusters, labels, 2) == pytest.approx(0.4)


def test_a_test_image_in_a_cluster_without_training_members_is_an_error():
    train_c, train_y = np.array([0, 0, 1]), np.array([3, 3, 4])
    assert clustering.cluster_error(train_c, train_y, np.array([0, 2]), np.array([3, 3]), 3) == 0.5


def test_lengths_must_match():
    with pytest.raises(AAEError, match="differ in length"):
        clustering.cluster_error([0, 1], [0], [0], [0], 2)


@pytest.mark.parametrize("call, fragment", [
    # -1 indexed the last class before: counted as a 3, this scored 0.0.
    (lambda: clustering.cluster_error([0, 1], [-1, 3], [0], [3], 2),
     "cluster_error: train_labels must be non-negative integers; got values from -1 to 3"),
    (lambda: clustering.cluster_error([0, 2], [1, 3], [0], [3], 2),
     "cluster_error: train_clusters must be integers in [0, 2); got values from 0 to 2"),
    (lambda: clustering.cluster_error([0, 1], [1, 3], [0.5], [3], 2), "test_clusters must be integers"),
    (lambda: clustering.paper_cluster_error(np.zeros((2, 2)), np.array([1, 3]), np.array([-1]), np.array([3])),
     "paper_cluster_error: test_clusters must be integers in [0, 2); got values from -1 to -1"),
])  # fmt: skip
def test_clusters_and_labels_out_of_range_are_refused(call, fragment):
    with pytest.raises(AAEError) as err:
        call()
    assert fragment in str(err.value)


def test_the_papers_rule_takes_each_clusters_most_confident_reference_image():
    # Cluster 0 holds mostly 1s, but its most confident image is a 7: the paper's rule labels
    # it 7, the majority 1.
    log_q = np.log(np.array([[0.90, 0.10], [0.80, 0.20], [0.99, 0.01], [0.05, 0.95]]))
    ref_labels = np.array([1, 1, 7, 3])
    test_clusters, test_labels = np.array([0, 0, 0, 1]), np.array([1, 1, 7, 3])
    assert clustering.paper_cluster_error(log_q, ref_labels, test_clusters, test_labels) == 0.5
    assert clustering.cluster_error(log_q.argmax(1), ref_labels, test_clusters, test_labels, 2) == 0.25


@pytest.mark.parametrize("with_val", [True, False])
def test_the_papers_rule_reads_the_validation_split_when_there_is_one(with_val):
    """Two clusters told apart by the first pixel v (cluster 0 where v > 0.5, the more confident
    the larger |v - 0.5|). The training images' most confident ones label the clusters rightly,
    the validation images' wrongly: the test error by the paper's rule is 1 with the validation
    split, 0 without it; the majority vote (training images) gives 0 either way."""
    from torch_aae import ClusteringAAE
    from torch_aae.data import Dataset

    def images(v):
        return torch.tensor(v)[:, None].expand(len(v), 4).contiguous()

    data = Dataset("hand-made", images([0.9, 0.1, 0.8, 0.2]), torch.tensor([0, 1, 0, 1]),
                   images([0.9, 0.8, 0.1, 0.2]), torch.tensor([0, 0, 1, 1]), (2, 2), 2)  # fmt: skip
    if with_val:  # its most confident image of cluster 0 is a 1, of cluster 1 a 0
        data.val_x, data.val_y = images([0.95, 0.05, 0.7, 0.3, 0.6]), torch.tensor([1, 0, 0, 1, 0])
    model = ClusteringAAE(4, (2, 2), n_classes=2, z_dim=2, hidden=8, disc_hidden=8)
    model.encoder.classify = lambda x: torch.stack([10 * x[:, 0], 10 * (1 - x[:, 0])], 1)
    metrics = clustering.evaluate(model, data, "cpu")
    assert metrics["test_cluster_error_paper_rule"] == (1.0 if with_val else 0.0)
    assert metrics["test_cluster_error"] == 0.0
    # Logged per epoch: the validation images' clusters labeled by majority vote of the
    # training images' (cluster 0: 0, cluster 1: 1), so the first two of the five are wrong.
    assert clustering.epoch_metrics(model, data, "cpu") == ({"eval/val_cluster_error": 0.4} if with_val else {})


def test_log_probabilities_rank_images_that_float32_softmax_calls_equally_certain():
    logits = np.array([[30.0, 0.0, 0.0], [40.0, 0.0, 0.0], [35.0, 0.0, 0.0]], dtype=np.float32)
    assert (torch.tensor(logits).softmax(1)[:, 0] == 1.0).all()  # a three-way tie in float32
    log_q = clustering.log_probabilities(logits)
    assert log_q[:, 0].argmax() == 1 and np.all(log_q[:, 0] < 0)
    assert np.allclose(log_q, torch.tensor(logits, dtype=torch.float64).log_softmax(1).numpy())
    # The first image labels cluster 0 under the paper's rule only if it is the most confident.
    assert clustering.paper_cluster_error(log_q, np.array([5, 6, 5]), np.array([0]), np.array([6])) == 0.0


def _pairwise_log_probabilities(logits):
    """The former computation, kept as the reference: log q_i = -log1p(sum_{j != i} exp(l_j - l_i)),
    from an (n, K, K) array (36 TiB for --clusters 100000 on 500 images: a MemoryError after training)."""
    diff = logits[:, None, :] - logits[:, :, None]
    k = logits.shape[1]
    diff[:, np.arange(k), np.arange(k)] = -np.inf
    top = diff.max(2, keepdims=True)
    others = top[..., 0] + np.log(np.exp(diff - top).sum(2))
    return -np.logaddexp(0.0, others)


def test_log_probabilities_equal_the_pairwise_formula_in_n_k_memory():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 7)) * rng.choice([0.1, 1.0, 30.0, 300.0], size=(64, 1))
    logits[0] = [5.0, 5.0, 1.0, 0.0, 0.0, -3.0, 5.0]  # a three-way tie at the top
    logits[1] = [0.0] * 7
    log_q = clustering.log_probabilities(logits)
    assert np.allclose(log_q, _pairwise_log_probabilities(logits), rtol=1e-12, atol=1e-300)
    infinite = np.array([[np.inf, 0.0, 0.0], [-np.inf, 1.0, 2.0], [-np.inf, -np.inf, 3.0]])
    expected = np.array([[0.0, -np.inf, -np.inf], [-np.inf, -np.log1p(np.e), -np.log1p(np.exp(-1.0))],
                         [-np.inf, -np.inf, 0.0]])  # fmt: skip
    assert np.allclose(clustering.log_probabilities(infinite), expected, rtol=1e-15)
    assert clustering.log_probabilities(np.array([[-np.inf]]))[0, 0] == 0.0  # K = 1: certain
    assert np.allclose(np.exp(log_q).sum(1), 1.0, rtol=1e-12)
    assert log_q[0, 0] == log_q[0, 1] == log_q[0, 6] and abs(np.exp(log_q[1, 0]) - 1 / 7) < 1e-15
    many = clustering.log_probabilities(rng.normal(size=(200, 20_000)).astype(np.float32))  # pairwise: 640 GB
    assert many.shape == (200, 20_000) and np.isfinite(many).all()


def test_the_papers_rule_lengths_must_match():
    with pytest.raises(AAEError, match="differ in length"):
        clustering.paper_cluster_error(np.zeros((2, 3)), [0], [0], [0])


def _config(**train):
    return Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32),
                  tiny_train(**train))  # fmt: skip


def test_training_never_reads_labels_and_writes_the_cluster_plot(mnist, tmp_path):
    data = subset_of(mnist, 400, 200)
    data.train_y = torch.full_like(data.train_y, 7)  # labels the step would see, were it to look
    torch.manual_seed(0)
    a = clustering.ClusteringAAE.from_config(_config().model, 784, (28, 28))
    fit(a, data, tiny_train(), out=tmp_path / "a", config=_config(), progress=False)
    data2 = subset_of(mnist, 400, 200)
    torch.manual_seed(0)
    b = clustering.ClusteringAAE.from_config(_config().model, 784, (28, 28))
    summary = fit(b, data2, tiny_train(), out=tmp_path / "b", config=_config(), progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)  # other labels, same training
    assert 0 <= summary["test_cluster_error"] <= 1 and 1 <= summary["clusters_used"] <= 4
    assert (tmp_path / "b" / "plots" / "clusters.png").is_file()


def test_the_categorical_prior_has_k_states():
    model = clustering.ClusteringAAE.from_config(_config().model, 784, (28, 28))
    assert model.encoder.class_head.out_features == 4
    assert model.label_discriminator(torch.eye(4)).shape == (4,)  # it scores 4-way one-hots
    with pytest.raises(RuntimeError):
        model.label_discriminator(torch.eye(10))


def test_clusters_flag_is_refused_by_other_models_and_labels_by_clustering():
    with pytest.raises(AAEError, match="only the clustering and dim-reduction models"):
        Config("semi-supervised", DataConfig(labels="100"), ModelConfig(clusters=16))
    with pytest.raises(AAEError, match="uses no labeled images .labels only score its clusters"):
        refuse_unread(Config("clustering", DataConfig(labels="100"), ModelConfig(clusters=16)))


def test_bench_seeds_reports_the_cluster_error_over_seeds(mnist, tmp_path, monkeypatch):
    from torch_aae import bench

    import torch_aae.data as data_module

    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: subset_of(mnist, 400, 200))
    config = Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=16, hidden=32, disc_hidden=32),
                    tiny_train(epochs=1))  # fmt: skip
    result = bench.bench_seeds(config, 2, tmp_path, "aae bench clustering ...", progress=False)
    metric = "test_cluster_error_paper_rule"  # the paper's figures are by its rule
    errors = result[metric]
    assert result["metric"] == metric and result["clusters"] == 16 and len(errors) == 2
    assert result[f"{metric}_mean"] == pytest.approx(sum(errors) / 2)
    assert result[f"{metric}_std"] == pytest.approx(abs(errors[0] - errors[1]) / 2**0.5)
    assert result[f"paper_{metric}"] == (9.55, 2.05)
    majority = result["test_cluster_error"]  # shown beside it
    assert result["also"] == "test_cluster_error" and result["test_cluster_error_mean"] == pytest.approx(sum(majority) / 2)
    markdown = (tmp_path / "bench.md").read_text()
    assert "| clustering | 16 | 2 |" in markdown
    assert f"test cluster error, by majority vote (each cluster takes the most frequent label of its training images): {50 * sum(majority):.2f}" in markdown
    assert "label of the training image (the run has no validation split) it is most confident of" in markdown
    with_split = {**result, "config": {**result["config"], "data": {**result["config"]["data"], "val_size": 1000}}}
    assert "label of the validation image it is most confident of" in bench.bench_markdown(with_split)


def test_bench_rescores_a_clustering_run_finished_before_the_papers_rule(mnist, tmp_path, monkeypatch):
    import json

    from torch_aae import bench

    data = DataConfig(data_dir=str(REPO_ROOT / "data"), subset=400)  # aae evaluate loads it again
    config = Config("clustering", data, ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32),
                    tiny_train(epochs=1))  # fmt: skip
    first = bench.bench_seeds(config, 1, tmp_path, "aae bench clustering ...", progress=False)
    summary_path = tmp_path / f"seed-{config.train.seed}" / "summary.json"
    summary = json.loads(summary_path.read_text())
    del summary["test_cluster_error_paper_rule"]  # as an older build wrote it
    summary_path.write_text(json.dumps(summary))
    again = bench.bench_seeds(config, 1, tmp_path, "aae bench clustering ...", progress=False)
    assert again["test_cluster_error_paper_rule"] == first["test_cluster_error_paper_rule"]
    assert (tmp_path / f"seed-{config.train.seed}" / "eval.json").is_file()  # scored by aae evaluate


def test_bench_refuses_a_model_without_a_test_score(tmp_path):
    from torch_aae import bench

    with pytest.raises(AAEError, match="no test score to report for the supervised model"):
        bench.bench_seeds(Config("supervised", DataConfig(), ModelConfig()), 1, tmp_path, "aae ...", progress=False)


def test_without_labels_the_evaluation_skips_only_the_cluster_error(mnist):
    import dataclasses

    model = clustering.ClusteringAAE.from_config(_config().model, 784, (28, 28))
    labeled = subset_of(mnist, 300, 100)
    unlabeled = dataclasses.replace(labeled, train_y=None, test_y=None, num_classes=None)
    with_labels = clustering.evaluate(model, labeled, "cpu")
    without = clustering.evaluate(model, unlabeled, "cpu")
    errors = ("test_cluster_error", "test_cluster_error_paper_rule")
    assert all(0 <= with_labels[k] <= 1 and k not in without for k in errors)
    assert without == {k: v for k, v in with_labels.items() if k not in errors}
    unlabeled.val_x = labeled.test_x  # a validation split without labels: no validation error either
    assert clustering.epoch_metrics(model, unlabeled, "cpu") == {}


def test_the_cluster_plot_has_one_row_per_cluster(mnist, tmp_path, monkeypatch):
    from torch_aae import plots

    grids = []
    monkeypatch.setattr(plots, "save_image_rows", lambda images, shape, labels, path, title=None:
                        grids.append((path.name, len(images), labels, title)))  # fmt: skip
    torch.manual_seed(0)
    model = clustering.ClusteringAAE.from_config(_config().model, 784, (28, 28))  # 4 clusters
    data = subset_of(mnist, 300, 100)
    clustering.make_plots(model, data, tmp_path, "cpu")
    sizes = model.class_probabilities(data.train_x).argmax(1).bincount(minlength=4)
    used = [k for k in range(4) if sizes[k]]
    name, n_images, labels, title = grids[-1]
    assert name == "clusters.png" and n_images == 10 * len(used)  # 10 images per used cluster, a row each
    assert labels == [f"{k}: {int(sizes[k])}" for k in used] and sum(sizes) == 300
    assert ("empty clusters left out" in title) == (len(used) < 4)


def test_with_a_view_the_reconstruction_reads_y_from_the_copy_and_z_from_the_image(monkeypatch):
    torch.manual_seed(0)
    config = Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32,
                                                           dropout=0.0), tiny_train(view_rotate=10.0, view_elastic=5.0, view_thickness=0.5))  # fmt: skip
    model = clustering.ClusteringAAE.from_config(config.model, 16, (4, 4))
    ctx = clustering.setup(model, None, config, "cpu", None)
    calls = []

    def fake_affine(x, image_shape, *amounts):  # the copy: the images reversed, pixel order and all
        calls.append((tuple(image_shape), amounts))
        return x.flip(1)

    def fake_thickness(x, image_shape, amount):  # then squared
        calls.append((tuple(image_shape), amount))
        return x**2

    monkeypatch.setattr("torch_aae.semi_supervised.random_affine", fake_affine)
    monkeypatch.setattr("torch_aae.semi_supervised.random_thickness", fake_thickness)
    x = torch.rand(6, 16)
    with torch.no_grad():
        logits_copy, _ = model.encoder(x.flip(1) ** 2)
        _, z_image = model.encoder(x)
    seen = []
    model.decoder.register_forward_hook(lambda m, a, out: seen.append(a[0].detach().clone()))
    opt = clustering.make_optimizers(model, config.train)
    ctx["input_noise"] = 0.0  # the encoder's inputs exactly x and its copy
    clustering.train_step(model, opt, x, ctx=ctx)
    assert calls == [((4, 4), (10.0, 0.0, 0.0, 5.0)), ((4, 4), 0.5)]  # the flags, in their functions' order
    expected = model.decoder_input(logits_copy.softmax(1), z_image)
    assert torch.allclose(seen[0], expected, atol=1e-6)
    ctx["view"] = (0.0,) * 5  # without a view, y and z both come from the image, and no copy
    with torch.no_grad():
        logits_image, z_image = model.encoder(x)
    clustering.train_step(model, opt, x, ctx=ctx)
    assert len(calls) == 2
    assert torch.allclose(seen[-1], model.decoder_input(logits_image.softmax(1), z_image), atol=1e-6)


def test_with_a_view_the_reconstruction_target_is_the_image_not_its_copy(monkeypatch):
    # The copy only feeds y: the decoder must still rebuild the image itself (a loss against the
    # transformed copy would teach the decoder to draw the transformation).
    from torch_aae import losses

    torch.manual_seed(0)
    config = Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32,
                                                           dropout=0.0), tiny_train(view_rotate=10.0))  # fmt: skip
    model = clustering.ClusteringAAE.from_config(config.model, 16, (4, 4))
    ctx = clustering.setup(model, None, config, "cpu", None)
    monkeypatch.setattr("torch_aae.semi_supervised.random_affine", lambda x, shape, *amounts: x.flip(1))
    outputs = []
    model.decoder.register_forward_hook(lambda m, a, out: outputs.append(out.detach().clone()))
    x = torch.rand(6, 16)
    logs = clustering.train_step(model, clustering.make_optimizers(model, config.train), x, ctx=ctx)
    recon = outputs[0]  # the reconstruction phase's decoding, before its update
    assert logs["loss/recon"].item() == pytest.approx(losses.reconstruction_loss(recon, x).item(), rel=1e-6)
    assert logs["loss/recon"].item() != pytest.approx(losses.reconstruction_loss(recon, x.flip(1)).item(), rel=1e-3)


@pytest.mark.parametrize("flag", ["view_shift", "view_rotate", "view_scale", "view_elastic", "view_thickness"])
def test_view_flags_are_the_clustering_and_dim_reduction_models(flag):
    value = 2.0 if flag == "view_shift" else 0.5  # a shift alone is whole pixels
    with pytest.raises(AAEError, match=f"--{flag.replace('_', '-')} {value}: the semi-supervised model "
                                       "does not take it \\(clustering, dim-reduction do\\)"):  # fmt: skip
        Config("semi-supervised", DataConfig(labels="100"), ModelConfig(), tiny_train(**{flag: value}))
    for kind in ("clustering", "dim-reduction"):
        assert getattr(Config(kind, DataConfig(), ModelConfig(clusters=16), tiny_train(**{flag: value})).train, flag) == value
    with pytest.raises(AAEError, match="must be >= 0"):
        tiny_train(**{flag: -1.0})


def test_view_scale_thickness_and_fractional_shift_alone_are_refused():
    with pytest.raises(AAEError, match="--view-scale 1.0: must be below 1"):
        tiny_train(view_scale=1.0)
    with pytest.raises(AAEError, match="--view-shift 1.5: alone, it moves whole pixels"):
        tiny_train(view_shift=1.5)
    with pytest.raises(AAEError, match="--view-thickness 1.5: must be at most 1"):
        tiny_train(view_thickness=1.5)
    assert tiny_train(view_shift=1.5, view_rotate=10.0).view_shift == 1.5  # with a rotation: any offset


# ----------------------------------------------------------------------------------------------
# The adversarial phases with K clusters (`semi_supervised.adversarial_autoencoder_phases`)


def _tiny_clustering(**train):
    config = Config("clustering", DataConfig(), ModelConfig(z_dim=2, clusters=4, hidden=32, disc_hidden=32,
                                                           dropout=0.0), tiny_train(**train))  # fmt: skip
    torch.manual_seed(0)
    model = clustering.ClusteringAAE.from_config(config.model, 16, (4, 4))
    return model, clustering.make_optimizers(model, config.train), clustering.setup(model, None, config, "cpu", None)


def test_one_steps_adversarial_losses_gradients_and_accuracies_are_the_papers():
    """As for the semi-supervised model: prior draws are the discriminators' real, codes their
    fake; the encoder minimizes -log D(code) for its K-way softmax(y) and its z alike."""
    model, optimizers, ctx = _tiny_clustering(lr_reg=1e-2)
    x = torch.rand(50, 16, generator=torch.Generator().manual_seed(1))
    rec = AdversarialRecorder(model, optimizers, x)
    torch.manual_seed(0)
    logs = clustering.train_step(model, optimizers, x, ctx=ctx)
    assert len(rec.cat) == len(rec.gauss) == 2 and rec.cat[0][0].shape == (100, 4)
    assert_adversarial_phases_match_the_hand_computation(rec, logs)


def test_cat_noise_reaches_the_cluster_discriminator_in_both_phases():
    """--cat-noise s: K-way one-hot draws + N(0, s^2) and softmax(y) + N(0, s^2), in the
    discriminator phase and (fresh noise) in the generator's."""
    model, optimizers, ctx = _tiny_clustering(cat_noise=0.1)
    x = torch.rand(400, 16, generator=torch.Generator().manual_seed(1))
    assert_cat_noise_in_both_phases(model, lambda: clustering.train_step(model, optimizers, x, ctx=ctx), 400, 0.1)
