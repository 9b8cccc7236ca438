"""The throughput benchmark: FLOPs counted from the executed matrix products, every model kind."""

from __future__ import annotations

import collections
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import tiny_train
from torch_aae import bench
from torch_aae.config import ModelConfig
from torch_aae.errors import AAEError, AAEWarning
from torch_aae.variants import VARIANTS


def test_flops_per_image_match_a_hand_count():
    # Unsupervised AAE, encoder 784-8-2, decoder 2-8-784, discriminator 2-4-1, no dropout.
    r = bench.throughput("unsupervised", batch_size=10, steps=2,
                         model_config=ModelConfig(z_dim=2, hidden=8, depth=1, disc_hidden=4,
                                                  disc_depth=1, dropout=0.0))  # fmt: skip
    e1, e2, d1, d2, q1, q2 = 784 * 8, 8 * 2, 2 * 8, 8 * 784, 2 * 4, 4 * 1  # multiply-adds per row
    macs = (
        2 * (e1 + e2 + d1 + d2) + (e2 + d1 + d2)  # reconstruction: forward, weight and input grads
        + (e1 + e2)  # the encoder pass shared by the discriminator and generator phases
        + 2 * (q1 + q2) * 2 + 2 * q2  # discriminator on real + fake rows: forward, weights, input
        + (q1 + q2) + (q2 + q1)  # generator: forward, input grads back to the code
        + (e1 + e2) + e2  # ... and through the encoder: weight grads, input grad of layer 2
    )  # fmt: skip
    assert r["flops_per_image"] == 2 * macs


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_every_model_kind_reports_the_keys(kind):
    r = bench.throughput(kind, batch_size=20, steps=2,
                         model_config=None if kind != "unsupervised" else ModelConfig(hidden=32, disc_hidden=32))  # fmt: skip
    for key in ("images_per_second", "matmul_gflops", "model_gflops", "fraction_of_peak", "flops_per_image"):
        assert r[key] > 0
    assert r["model_gflops"] == pytest.approx(r["images_per_second"] * r["flops_per_image"] / 1e9, rel=0.01)


@pytest.mark.parametrize("batch_size", [0, bench.MAX_THROUGHPUT_BATCH + 1])
def test_throughput_refuses_a_batch_no_training_takes(batch_size):
    """--batch-size 100000 ran its warm-up at about 7.5 GB before timing anything."""
    with pytest.raises(AAEError, match=rf"--batch-size {batch_size}: must be in 1\.\.60000"):
        bench.throughput("unsupervised", batch_size=batch_size, steps=1)


def test_images_per_second_is_the_rate_of_the_timed_steps(monkeypatch):
    # Each step sleeps 50 ms besides its (millisecond) work, so the true rate is known without
    # timing anything here: at most batch / 0.05 s (sleep never returns early), and at least
    # batch / 0.5 s unless a tiny step took 450 ms on average. A rate off by 10x fails either way.
    variant = bench.get_variant("unsupervised")
    real_step = variant.train_step

    def slow_step(*args):
        time.sleep(0.05)
        return real_step(*args)

    monkeypatch.setattr(variant, "train_step", slow_step)
    r = bench.throughput("unsupervised", batch_size=20, steps=4,
                         model_config=ModelConfig(hidden=8, disc_hidden=8))  # fmt: skip
    assert 20 / 0.5 < r["images_per_second"] <= 20 / 0.05


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_replays_the_products_in_its_type(precision):
    cfg = ModelConfig(hidden=32, disc_hidden=32)
    with _ProductTypes() as seen:
        r = bench.throughput("unsupervised", batch_size=20, steps=2, model_config=cfg, precision=precision)
    assert r["precision"] == precision and r["fraction_of_peak"] > 0
    # The operand types of the products actually run, not the reported setting: the recorded and
    # timed steps' (mm, addmm) and the replay's (their out= forms) are all in the step's type.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert set(seen["step"]) == {dtype} and set(seen["replay"]) == {dtype}


class _ProductTypes(TorchDispatchMode):
    """The operand dtypes of every mm/addmm run under it, by kind: "step" or "replay" (out=)."""

    def __init__(self):
        super().__init__()
        self.dtypes = {"step": collections.Counter(), "replay": collections.Counter()}

    def __enter__(self):
        super().__enter__()
        return self.dtypes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            kind = "replay" if "out" in kwargs else "step"
            self.dtypes[kind].update(a.dtype for a in args if isinstance(a, torch.Tensor))
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "kind, data, model, expected",
    [
        ("semi-supervised", {"labels": "100"}, {}, ("labels", "100", (1.90, 0.10))),
        ("semi-supervised", {"labels": "100", "dataset": "fashion-mnist"}, {}, ("labels", "100", None)),
        ("clustering", {}, {"clusters": 16}, ("clusters", 16, (9.55, 2.05))),
        ("clustering", {"dataset": "fashion-mnist"}, {"clusters": 16}, ("clusters", 16, None)),
        ("unsupervised", {}, {"z_dim": 8, "prior_std": 5.0}, ("z_dim", 8, (340.0, 2.0))),
        ("unsupervised", {"dataset": "fashion-mnist"}, {"z_dim": 8, "prior_std": 5.0}, ("z_dim", 8, None)),
    ],
)
def test_the_papers_figure_is_shown_for_mnist_only(kind, data, model, expected):
    from torch_aae.config import Config, DataConfig, ModelConfig

    assert bench._setting(Config(kind, DataConfig(**data), ModelConfig(**model))) == expected


def test_calls_keep_a_bench_json_written_before_them():
    calls = bench._calls({"command": "aae bench old", "jobs": 2}, "aae bench new", 3, [5])
    assert [(c["command"], c["jobs"], c["trained"]) for c in calls] == [("aae bench old", 2, None), ("aae bench new", 3, [5])]
    assert calls[0]["note"] == "recorded before calls were" and "ended" in calls[1]


def test_seed_folders_left_out_include_negative_seeds(tmp_path):
    """A bench run with --seed -1 wrote seed--1, which a later call's table left out unsaid."""
    from torch_aae.errors import AAEWarning

    for name in ("seed--1", "seed-0", "seed-1", "seed-x", "notes"):
        (tmp_path / name).mkdir()
    with pytest.warns(AAEWarning, match=r"seed--1, seed-1 outside --seed 0 --seeds 1"):
        assert bench._seeds_left_out(tmp_path, 0, 1) == [-1, 1]


def test_bench_seeds_aggregates_each_seeds_score_and_the_table_shows_them(tmp_path, monkeypatch):
    # Seeds with known scores (no training): the mean and the sample std (ddof 1) over the seeds,
    # of the bench's metric and of the score shown beside it, and the table's numbers from them.
    from torch_aae.config import Config, DataConfig

    scores = {3: (0.10, 0.05, 60.0), 4: (0.13, 0.08, 120.0), 5: (0.19, 0.11, 180.0)}
    trained = []

    def fake_seed(config_dict, run, progress):
        seed = config_dict["train"]["seed"]
        trained.append((seed, run))
        paper_rule, majority, seconds = scores[seed]
        return {"test_cluster_error_paper_rule": paper_rule, "test_cluster_error": majority,
                "epochs": 1, "train_seconds": seconds}  # fmt: skip

    monkeypatch.setattr(bench, "_train_seed", fake_seed)
    (tmp_path / "seed-9").mkdir()  # a seed of another call: left out, and said so
    config = Config("clustering", DataConfig(), ModelConfig(clusters=16), tiny_train(epochs=1, seed=3))
    with pytest.warns(AAEWarning, match="seed-9 outside --seed 3 --seeds 3"):
        r = bench.bench_seeds(config, 3, tmp_path, "aae bench clustering ...", progress=False)
    assert trained == [(s, str(tmp_path / f"seed-{s}")) for s in (3, 4, 5)]
    assert r["metric"] == "test_cluster_error_paper_rule" and r["seeds"] == [3, 4, 5] and r["left_out"] == [9]
    assert r["test_cluster_error_paper_rule"] == [0.10, 0.13, 0.19]
    assert r["test_cluster_error_paper_rule_mean"] == pytest.approx(0.14)
    assert r["test_cluster_error_paper_rule_std"] == pytest.approx(0.0021**0.5)  # sum of squares 0.0042 / 2
    assert r["test_cluster_error"] == [0.05, 0.08, 0.11]
    assert r["test_cluster_error_mean"] == pytest.approx(0.08) and r["test_cluster_error_std"] == pytest.approx(0.03)
    assert [run["train_seconds"] for run in r["runs"]] == [60.0, 120.0, 180.0]
    markdown = (tmp_path / "bench.md").read_text()
    assert "| clustering | 16 | 3 | 14.00 ± 4.58 | 9.55 ± 2.05 | 1 | 2.0 |" in markdown  # 2 minutes per seed
    assert "Per seed: seed 3: 10.00%, seed 4: 13.00%, seed 5: 19.00%" in markdown
    assert "of its training images): 8.00 ± 3.00% (5.00, 8.00, 11.00)" in markdown
    one = {**r, "seeds": [3], "runs": r["runs"][:1], "test_cluster_error_paper_rule_mean": 0.10}
    assert "| 10.00 (one seed) |" in bench.bench_markdown(one)
