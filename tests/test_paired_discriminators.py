"""`--paired-discriminators`: the two discriminators in one batched product per layer, the same
math as two calls (values and gradients), and the same training."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import subset_of, tiny_train

from torch_aae import semi_supervised as semi
from torch_aae.cli import main
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.networks import Discriminator, paired_discriminators
from torch_aae.semi_supervised import SemiSupervisedAAE
from torch_aae.train import fit


def _grads(nets):
    return [p.grad.clone() for net in nets for p in net.parameters()]


@pytest.mark.parametrize("in_dims", [(10, 10), (16, 2)])  # the semi-supervised recipe's; clustering's
def test_paired_discriminators_compute_what_two_calls_compute(in_dims):
    torch.manual_seed(0)
    first, second = Discriminator(in_dims[0], [64, 64]), Discriminator(in_dims[1], [64, 64])
    x1, x2 = torch.randn(50, in_dims[0]), torch.randn(50, in_dims[1])
    results = []
    for pair in (False, True):
        for p in [*first.parameters(), *second.parameters()]:
            p.grad = None
        out1, out2 = paired_discriminators(first, second, x1, x2) if pair else (first(x1), second(x2))
        (out1.sum() + out2.square().sum()).backward()
        results.append((out1.detach(), out2.detach(), _grads([first, second])))
    (a1, a2, ga), (b1, b2, gb) = results
    assert b1.shape == a1.shape == (50,) and b2.shape == (50,)
    assert torch.allclose(b1, a1, atol=1e-5) and torch.allclose(b2, a2, atol=1e-5)
    for g, h in zip(ga, gb):
        assert torch.allclose(h, g, rtol=1e-4, atol=1e-5)
    assert not torch.equal(a1, a2[: len(a1)])  # two networks, not one


def test_discriminators_of_other_depth_or_batch_run_apart():
    torch.manual_seed(0)
    first, second = Discriminator(4, [8, 8]), Discriminator(4, [8])
    x = torch.randn(5, 4)
    for got, want in zip(paired_discriminators(first, second, x, x), (first(x), second(x))):
        assert torch.equal(got, want)
    same = Discriminator(4, [8, 8])
    for got, want in zip(paired_discriminators(first, same, x, x[:3]), (first(x), same(x[:3]))):
        assert torch.equal(got, want)


def _semi():
    torch.manual_seed(0)
    return SemiSupervisedAAE(784, (28, 28), 10, z_dim=10, hidden=32, depth=2, disc_hidden=16, disc_depth=2, dropout=0.2)


def test_training_with_paired_discriminators_learns_as_without(mnist, tmp_path, monkeypatch):
    """The same random draws and the same math: two epochs' losses agree to rounding. (And the
    flag is honoured: both adversarial phases run the pair.)"""
    calls = []

    def counted(*args):
        calls.append(len(args[2]))
        return paired_discriminators(*args)

    monkeypatch.setattr(semi, "paired_discriminators", counted)
    data = subset_of(mnist, 300, 100)
    rows = {}
    for paired in (False, True):
        train = tiny_train(epochs=2, batch_size=50, input_noise=0.3, cat_noise=0.1, paired_discriminators=paired)
        config = Config("semi-supervised", DataConfig(labels="20"), ModelConfig(z_dim=10), train)
        fit(_semi(), data, train, out=tmp_path / str(paired), config=config, progress=False)
        rows[paired] = [json.loads(line) for line in (tmp_path / str(paired) / "metrics.jsonl").open()]
    assert calls == [100, 50] * 12  # each step: phase 2 (real and fake), phase 3
    for got, ref in zip(rows[True], rows[False]):
        for key in ("loss/recon", "loss/disc_cat", "loss/disc_gauss", "loss/gen", "loss/sup"):
            assert got[key] == pytest.approx(ref[key], rel=1e-3), key
    assert rows[True][-1]["loss/recon"] < rows[True][0]["loss/recon"]


def test_paired_discriminators_are_refused_for_a_model_with_one_discriminator(tmp_path, capsys):
    code = main(["train", "unsupervised", "--paired-discriminators", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert code != 0 and "--paired-discriminators" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
