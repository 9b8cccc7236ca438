"""The throughput benchmark: FLOPs counted from the executed matrix products, every model kind."""

from __future__ import annotations

import pytest

from torch_aae import bench
from torch_aae.config import ModelConfig
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


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_replays_the_products_in_its_type(precision):
    cfg = ModelConfig(hidden=32, disc_hidden=32)
    r = bench.throughput("unsupervised", batch_size=20, steps=2, model_config=cfg, precision=precision)
    assert r["precision"] == precision and r["fraction_of_peak"] > 0


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
