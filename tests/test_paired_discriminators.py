"""`--paired-discriminators`: the two discriminators in one batched product per layer, the same
math as two calls (values and gradients), and the same training."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import subset_of, tiny_semi, tiny_train

from torch_aae import semi_supervised as semi
from torch_aae.cli import main
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.networks import Discriminator, paired_discriminators
from torch_aae.train import fit


def _count_batched_products(monkeypatch) -> list:
    """The calls of torch.baddbmm from here on (the paired layers' products), one entry each."""
    calls, baddbmm = [], torch.baddbmm
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **kw: calls.append(1) or baddbmm(*a, **kw))
    return calls


def _grads(nets):
    return [p.grad.clone() for net in nets for p in net.parameters()]


@pytest.mark.parametrize("in_dims", [(10, 10), (16, 2)])  # the semi-supervised recipe's; clustering's
def test_paired_discriminators_compute_what_two_calls_compute(in_dims, monkeypatch):
    calls = _count_batched_products(monkeypatch)
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
    assert len(calls) == (3 if in_dims[0] == in_dims[1] else 2)  # all layers; all but the first
    (a1, a2, ga), (b1, b2, gb) = results
    assert b1.shape == a1.shape == (50,) and b2.shape == (50,)
    assert torch.allclose(b1, a1, atol=1e-5) and torch.allclose(b2, a2, atol=1e-5)
    for g, h in zip(ga, gb):
        assert torch.allclose(h, g, rtol=1e-4, atol=1e-5)
    assert not torch.equal(a1, a2[: len(a1)])  # two networks, not one


def test_discriminators_of_other_depth_or_batch_run_apart(monkeypatch):
    calls = _count_batched_products(monkeypatch)
    torch.manual_seed(0)
    first, second = Discriminator(4, [8, 8]), Discriminator(4, [8])
    x = torch.randn(5, 4)
    for got, want in zip(paired_discriminators(first, second, x, x), (first(x), second(x))):
        assert torch.equal(got, want)
    same = Discriminator(4, [8, 8])
    for got, want in zip(paired_discriminators(first, same, x, x[:3]), (first(x), same(x[:3]))):
        assert torch.equal(got, want)
    assert calls == []


def test_training_with_paired_discriminators_learns_as_without(mnist, tmp_path, monkeypatch):
    """The same random draws and the same math: two epochs' losses agree to rounding. (And the
    flag is honoured: both adversarial phases run the pair.)"""
    calls = []

    def counted(*args):
        calls.append(len(args[2]))
        return paired_discriminators(*args)

    monkeypatch.setattr(semi, "paired_discriminators", counted)
    products = _count_batched_products(monkeypatch)
    data = subset_of(mnist, 300, 100)
    rows = {}
    for paired in (False, True):
        train = tiny_train(epochs=2, batch_size=50, input_noise=0.3, cat_noise=0.1, paired_discriminators=paired)
        config = Config("semi-supervised", DataConfig(labels="20"), ModelConfig(z_dim=10), train)
        fit(tiny_semi(z_dim=10, disc_hidden=16), data, train, out=tmp_path / str(paired), config=config, progress=False)
        rows[paired] = [json.loads(line) for line in (tmp_path / str(paired) / "metrics.jsonl").open()]
    assert calls == [100, 50] * 12  # each step: phase 2 (real and fake), phase 3
    assert len(products) == 3 * len(calls)  # z-dim 10 = 10 classes: every layer paired
    for got, ref in zip(rows[True], rows[False]):
        for key in ("loss/recon", "loss/disc_cat", "loss/disc_gauss", "loss/gen", "loss/sup"):
            assert got[key] == pytest.approx(ref[key], rel=1e-3), key
    assert rows[True][-1]["loss/recon"] < rows[True][0]["loss/recon"]


def test_paired_discriminators_are_refused_for_a_model_with_one_discriminator(tmp_path, capsys):
    code = main(["train", "unsupervised", "--paired-discriminators", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert code != 0 and "--paired-discriminators" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_discriminators_of_other_widths_after_the_first_layer_run_apart(monkeypatch):
    calls = _count_batched_products(monkeypatch)
    torch.manual_seed(0)
    first, second = Discriminator(10, [64, 32]), Discriminator(10, [64, 64])
    x = torch.randn(5, 10)
    for got, want in zip(paired_discriminators(first, second, x, x), (first(x), second(x))):
        assert torch.equal(got, want)
    assert calls == []


def test_the_throughput_recorder_counts_each_batched_product_as_its_plain_products():
    """`aae bench throughput` counts FLOPs from the recorded products: pairing the discriminators
    changes how they are computed, not how many FLOPs they take."""
    from torch_aae.bench import MatmulRecorder

    torch.manual_seed(0)
    first, second = Discriminator(10, [64, 64]), Discriminator(10, [64, 64])
    x1, x2 = torch.randn(50, 10), torch.randn(50, 10)
    recorded = []
    for pair in (False, True):
        with MatmulRecorder() as rec:
            out1, out2 = paired_discriminators(first, second, x1, x2) if pair else (first(x1), second(x2))
            (out1.sum() + out2.sum()).backward()
        recorded.append(rec)
    apart, paired = recorded
    assert len(paired.calls) == len(apart.calls) > 6 and paired.flops == apart.flops > 0
    def sizes(rec):  # each product's (m, k, n) as a set of sizes: a transposed one counts alike
        return sorted(tuple(sorted((a[0], a[1], b[1]))) for a, _, b, _, _ in rec.calls)

    assert sizes(paired) == sizes(apart)


def test_the_throughput_bench_refuses_pairing_for_a_model_with_one_discriminator():
    from torch_aae.bench import throughput
    from torch_aae.errors import AAEError

    with pytest.raises(AAEError, match="--paired-discriminators: the unsupervised model has one discriminator"):
        throughput("unsupervised", 10, 1, paired_discriminators=True)
