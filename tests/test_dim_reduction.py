"""Dimensionality reduction (paper section 7): the cluster-head penalty and the representation."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT, subset_of, tiny_train

from torch_aae import dim_reduction, load_dataset
from torch_aae.api import evaluate_run
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.errors import AAEError
from torch_aae.train import fit


def test_head_penalty_known_values():
    heads = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])  # distances 5, 10, ~8.06
    assert dim_reduction.head_penalty(heads, 6.0).item() == pytest.approx(1.0)  # only the pair at 5
    assert dim_reduction.head_penalty(heads, 5.0).item() == 0.0
    assert dim_reduction.head_penalty(heads, 0.0).item() == 0.0


def test_head_penalty_pushes_close_heads_apart():
    heads = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    dim_reduction.head_penalty(heads, 6.0).backward()
    assert heads.grad[0, 0] > 0 and heads.grad[1, 0] < 0  # descent moves them apart along x


def tiny(**kw):
    args = dict(n_classes=4, z_dim=2, hidden=32, disc_hidden=32, dropout=0.0, head_distance=6.0)
    args.update(kw)
    torch.manual_seed(0)
    return dim_reduction.DimReductionAAE(784, (28, 28), **args)


def test_representation_is_the_clusters_head_plus_z():
    model = tiny()
    y = torch.eye(4)
    z = torch.randn(4, 2)
    torch.testing.assert_close(model.decoder_input(y, z), model.heads + z)
    assert model.decode(y, z).shape == (4, 784)  # the decoder reads the 2-D representation


def _config(labels=None, clusters=4):
    return Config("dim-reduction", DataConfig(labels=labels),
                  ModelConfig(z_dim=2, clusters=clusters, head_distance=6.0, hidden=32, disc_hidden=32),
                  tiny_train())  # fmt: skip


def test_unsupervised_and_semi_supervised_runs(mnist, tmp_path):
    data = load_dataset("mnist", REPO_ROOT / "data", subset=400)  # evaluate_run below loads it again
    model = tiny()
    summary = fit(model, data, tiny_train(), out=tmp_path / "u", config=_config(), progress=False)
    assert 0 <= summary["test_cluster_error"] <= 1 and "test_error" not in summary
    assert (tmp_path / "u" / "plots" / "representation.png").is_file()
    # One cluster per class, without labels: clusters, not a classifier, so no test_error.
    summary = fit(tiny(n_classes=10), data, tiny_train(), out=tmp_path / "u10", config=_config(clusters=10),
                  progress=False)  # fmt: skip
    assert "test_cluster_error" in summary and "test_error" not in summary
    model = tiny(n_classes=10)
    summary = fit(model, data, tiny_train(), out=tmp_path / "s", config=_config("100", 10), progress=False)
    assert 0 <= summary["test_error"] <= 1
    # The checkpoints record which: a later evaluation tells the two apart too.
    assert "test_error" not in evaluate_run(tmp_path / "u10") and "test_error" in evaluate_run(tmp_path / "s")
    assert (tmp_path / "s" / "labeled_indices.json").is_file()


def test_labels_need_one_cluster_per_class(mnist):
    data = subset_of(mnist, 400, 200)
    with pytest.raises(AAEError, match="needs one cluster per class, --clusters 10"):
        dim_reduction.setup(tiny(), data, _config("100", 4), "cpu", None)


def test_head_distance_only_for_dim_reduction():
    with pytest.raises(AAEError, match="only the dim-reduction model"):
        Config("clustering", DataConfig(), ModelConfig(clusters=16, head_distance=3.0))


@pytest.mark.parametrize("labels", [None, "100"])
def test_the_view_flags_reach_the_reconstruction_phase_with_and_without_labels(mnist, monkeypatch, labels):
    data = subset_of(mnist, 400, 200)
    n = 10 if labels else 4
    train = tiny_train(view_rotate=15.0, view_shift=2.0)
    config = Config("dim-reduction", DataConfig(labels=labels),
                    ModelConfig(z_dim=2, clusters=n, head_distance=6.0, hidden=32, disc_hidden=32), train)  # fmt: skip
    model = tiny(n_classes=n)
    ctx = dim_reduction.setup(model, data, config, "cpu", None)
    calls = []
    monkeypatch.setattr("torch_aae.semi_supervised.random_affine",
                        lambda x, shape, *amounts: calls.append(amounts) or x)  # fmt: skip
    dim_reduction.train_step(model, dim_reduction.make_optimizers(model, train), data.train_x[:50], None, ctx, 0)
    assert calls == [(15.0, 0.0, 2.0, 0.0)]  # once: the reconstruction phase's copy


@pytest.mark.parametrize("labels", [None, "100"])
def test_the_reconstruction_phase_pays_the_head_penalty_with_and_without_labels(mnist, monkeypatch, labels):
    # The heads learn in the reconstruction phase from the BCE *and* the penalty that keeps every
    # two heads eta apart. With heads well inside eta = 6 of each other, the gradient on the
    # heads when that phase's optimizer steps is d(BCE + penalty)/dW; without the penalty, the
    # heads would be left free to overlap (the BCE alone trains fine).
    from torch_aae import losses

    data = subset_of(mnist, 400, 200)
    n = 10 if labels else 4
    model = tiny(n_classes=n)
    with torch.no_grad():
        model.heads.copy_(0.5 * torch.randn(n, 2))  # all pairs far closer than 6
    heads_before = model.heads.detach().clone()
    ctx = dim_reduction.setup(model, data, _config(labels, n), "cpu", None)
    opt = dim_reduction.make_optimizers(model, tiny_train())
    bce_grads, phase_grads = [], []
    reconstruction_loss = losses.reconstruction_loss

    def recorded_bce(logits, target):  # d(BCE)/dW, before the phase's own backward pass
        out = reconstruction_loss(logits, target)
        bce_grads.append(torch.autograd.grad(out, model.heads, retain_graph=True)[0])
        return out

    monkeypatch.setattr(losses, "reconstruction_loss", recorded_bce)
    opt["recon"].register_step_pre_hook(lambda o, args, kwargs: phase_grads.append(model.heads.grad.clone()))
    dim_reduction.train_step(model, opt, data.train_x[:50], None, ctx, 0)
    assert len(bce_grads) == 1 and len(phase_grads) == 1
    penalty_at = heads_before.clone().requires_grad_(True)
    penalty_grad = torch.autograd.grad(dim_reduction.head_penalty(penalty_at, 6.0), penalty_at)[0]
    assert penalty_grad.norm(dim=1).min() > 0.1  # every head is pushed: the two gradients differ
    torch.testing.assert_close(phase_grads[0], bce_grads[0] + penalty_grad)
