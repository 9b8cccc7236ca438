"""--cuda-graphs: refusals, and the replay bookkeeping with the capture emulated on the CPU.

A CUDA graph replays the kernels its capture recorded; here `graphs.capture` is replaced by a
function that returns the step itself, so that every "replay" runs the step once, as a replay
does. What this checks is everything around the graph: the batch indices and step inputs in
static buffers, the loss sums accumulated in place, the learning-rate schedule written into
the optimizers' tensors, the incomplete last batch, checkpoints and resuming. The real capture
is tested on a GPU (tests/test_cuda.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
import torch
from conftest import REPO_ROOT, subset_of, tiny_semi, tiny_train

from torch_aae import graphs
from torch_aae import semi_supervised as semi
from torch_aae.config import Config, DataConfig, ModelConfig, TrainConfig
from torch_aae.errors import AAEError
from torch_aae.train import fit, set_learning_rates


@pytest.fixture
def emulated(monkeypatch):
    """--cuda-graphs on the CPU: the 'graph' is the step itself, the side stream a no-op."""
    calls = {"captured": 0}

    def capture(fn):
        calls["captured"] += 1
        return fn

    monkeypatch.setattr(graphs, "capture", capture)
    monkeypatch.setattr(graphs, "side_stream", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(graphs, "check", lambda *a, **k: None)
    return calls


def run(data, tmp_path, name, cuda_graphs, epochs=2, **kw):
    train = tiny_train(epochs=epochs, batch_size=60, lr_step=1, input_noise=0.3, cuda_graphs=cuda_graphs, **kw)
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=2), train)
    model = tiny_semi()
    summary = fit(model, data, train, out=tmp_path / name, config=config, progress=False)
    return model, summary, [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]


def test_replayed_steps_train_as_the_eager_loop(mnist, tmp_path, emulated):
    # 1000 images in batches of 60: 16 full batches (replays) and an incomplete one (eager).
    data = subset_of(mnist, 1000, 200)
    eager, eager_summary, eager_rows = run(data, tmp_path, "eager", False)
    graphed, graphed_summary, graphed_rows = run(data, tmp_path, "graphed", True)
    assert emulated["captured"] == 1
    for a, b in zip(eager.state_dict().values(), graphed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for row_a, row_b in zip(eager_rows, graphed_rows, strict=True):
        for key in row_a:
            if key.startswith(("loss/", "acc/")):
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-4, abs=1e-6), key
    assert graphed_summary["test_error"] == pytest.approx(eager_summary["test_error"], abs=0.01)


def test_the_graph_reads_the_learning_rate_schedule(mnist, tmp_path, emulated):
    data = subset_of(mnist, 300, 100)
    train = tiny_train(epochs=1, batch_size=60, lr_recon=2e-3, cuda_graphs=True)
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=2), train)
    model = tiny_semi()
    optimizers = semi.make_optimizers(model, train)
    graphs.make_capturable(optimizers, torch.device("cpu"))
    lr = optimizers["recon"].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == pytest.approx(2e-3)
    set_learning_rates(optimizers, 5, lr_step=3)
    assert optimizers["recon"].param_groups[0]["lr"] is lr  # the same tensor, changed in place
    assert float(lr) == pytest.approx(2e-4)
    set_learning_rates(optimizers, 0, lr_step=3)
    assert float(lr) == pytest.approx(2e-3)
    # A graphed run's checkpoint holds plain numbers, and an eager run resumes from it.
    fit(model, data, train, out=tmp_path / "run", config=config, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=False)
    for state in ckpt["optimizers"].values():
        assert all(isinstance(g["lr"], float) and not g["capturable"] for g in state["param_groups"])
    more = dataclasses.replace(train, epochs=2, cuda_graphs=False)
    summary = fit(tiny_semi(), data, more, out=tmp_path / "run", resume=True,
                  config=dataclasses.replace(config, train=more), progress=False)  # fmt: skip
    assert summary["epochs"] == 2


def test_a_resumed_graphed_run_continues_its_epochs_loss_sums(mnist, tmp_path, emulated):
    data = subset_of(mnist, 600, 100)
    _, _, whole_rows = run(data, tmp_path, "whole", True, epochs=2)
    # The same run, stopped after the first epoch and resumed: the same second epoch.
    run(data, tmp_path, "split", True, epochs=1)
    train = tiny_train(epochs=2, batch_size=60, lr_step=1, input_noise=0.3, cuda_graphs=True)
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=2), train)
    fit(tiny_semi(), data, train, out=tmp_path / "split", resume=True, config=config, progress=False)
    split_rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").open()]
    assert split_rows[1]["loss/recon"] == pytest.approx(whole_rows[1]["loss/recon"], rel=1e-4)


@pytest.mark.parametrize(
    "kind, train, device, world, message",
    [
        ("semi-supervised", TrainConfig(), "cpu", False, "needs a CUDA device"),
        ("unsupervised", TrainConfig(), "cuda", False, "works with semi-supervised"),
        ("unsupervised", TrainConfig(), "cpu", False, "the unsupervised model's step is not captured"),
        ("semi-supervised", TrainConfig(optimizer="sgd"), "cuda", False, "--optimizer adam"),
        ("clustering", TrainConfig(compile="default"), "cuda", False, "exclude each other"),
        ("dim-reduction", TrainConfig(), "cuda", True, "torchrun"),
    ],
)
def test_cuda_graphs_are_refused_where_they_cannot_work(kind, train, device, world, message):
    with pytest.raises(AAEError, match=message):
        graphs.check(kind, torch.device(device), train, world)


def test_cuda_graphs_on_the_cpu_fail_before_the_run_folder_exists(tmp_path, capsys):
    from torch_aae.cli import main

    code = main(["train", "semi-supervised", "--out", str(tmp_path / "run"), "--cuda-graphs",
                 "--device", "cpu", "--epochs", "1", "--data-dir", str(REPO_ROOT / "data")])  # fmt: skip
    assert code == 1
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
