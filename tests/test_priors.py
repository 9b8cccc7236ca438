"""The priors: each one's samples have the statistics it states (paper Fig. 2 and 4)."""

from __future__ import annotations

import math

import pytest
import torch

from torch_aae.errors import AAEError
from torch_aae.priors import (
    PRIORS,
    CategoricalPrior,
    GaussianPrior,
    MixturePrior,
    SwissRollPrior,
    UniformPrior,
    make_prior,
)

N = 100_000  # samples per check: standard errors ~ 0.3% of a std


def seeded(prior, n=N, labels=None):
    torch.manual_seed(0)
    return prior.sample(n, labels=labels)


def per_class(n, k):
    """Labels 0..k-1, n // k of each."""
    return torch.arange(n) % k


# ----------------------------------------------------------------------------------------------
# Mixture of Gaussians on a circle


@pytest.mark.parametrize("k, radius, along, across", [(10, 1.4, 0.5, 0.05), (4, 3.0, 0.1, 0.3)])
def test_mixture_components_have_their_mean_and_stds(k, radius, along, across):
    prior = MixturePrior(k, radius, along, across)
    labels = per_class(N, k)
    z = seeded(prior, labels=labels)
    assert z.shape == (N, 2) and prior.dim == 2 and prior.num_classes == k
    for c in range(k):
        zc = z[labels == c]
        angle = 2 * math.pi * c / k
        radial = torch.tensor([math.cos(angle), math.sin(angle)])
        tangent = torch.tensor([-math.sin(angle), math.cos(angle)])
        # Mean on the circle at the component's angle; std along / across its radius.
        assert torch.allclose(zc.mean(0), radius * radial, atol=0.05 * along + 0.05 * across)
        assert (zc @ radial).std().item() == pytest.approx(along, rel=0.05)
        assert (zc @ tangent).std().item() == pytest.approx(across, rel=0.05)
    # assign() finds the component by angle: wrong only for the rare points near the origin.
    assert (prior.assign(z) == labels).float().mean() > 0.99


@pytest.mark.parametrize("k", [10, 3])
def test_mixture_without_labels_draws_every_component_equally(k):
    prior = MixturePrior(k)
    z = seeded(prior)
    freq = prior.assign(z).bincount(minlength=k).float() / N
    assert torch.allclose(freq, torch.full((k,), 1 / k), atol=0.01)
    # The whole mixture: mean 0, E|z|^2 = radius^2 + along^2 + across^2.
    assert z.mean(0).abs().max() < 0.02
    expected = prior.radius**2 + prior.std_along**2 + prior.std_across**2
    assert z.pow(2).sum(1).mean().item() == pytest.approx(expected, rel=0.01)


# ----------------------------------------------------------------------------------------------
# Swiss roll


@pytest.mark.parametrize("k, radius, turns", [(10, 3.0, 2.0), (5, 1.0, 1.5)])
def test_swiss_roll_segments_cover_their_radius_range_on_the_spiral(k, radius, turns):
    prior = SwissRollPrior(k, radius, turns)
    labels = per_class(N, k)
    z = seeded(prior, labels=labels)
    r = z.norm(dim=1)
    # On the spiral: the angle is 2 pi turns r / radius (mod 2 pi).
    theta = 2 * math.pi * turns * r / radius
    assert torch.allclose(z, torch.stack([r * theta.cos(), r * theta.sin()], 1), atol=1e-4)
    for c in range(k):
        rc = r[labels == c]
        lo, hi = radius * math.sqrt(c / k), radius * math.sqrt((c + 1) / k)
        assert lo - 1e-5 <= rc.min() and rc.max() <= hi + 1e-5
        assert rc.min() < lo + 0.01 * (hi - lo) and rc.max() > hi - 0.01 * (hi - lo)  # filled
        # u = (r / radius)^2 is uniform on the segment [c / k, (c + 1) / k): mean at its middle.
        assert ((rc / radius) ** 2).mean().item() == pytest.approx((c + 0.5) / k, abs=0.003)
    assert torch.equal(prior.assign(z), labels)


def test_swiss_roll_width_is_isotropic_noise_around_the_curve():
    bare, thick = SwissRollPrior(), SwissRollPrior(width=0.1)
    labels = per_class(N, 10)
    torch.manual_seed(0)
    curve = bare.sample(N, labels)
    torch.manual_seed(0)
    z = thick.sample(N, labels)
    # Same draws along the roll (the noise is drawn after them), then N(0, 0.1^2 I) around it.
    noise = z - curve
    assert noise.mean(0).abs().max().item() < 0.002
    assert noise.std(0).tolist() == pytest.approx([0.1, 0.1], rel=0.02)
    assert (thick.assign(z) == labels).float().mean() > 0.9  # still mostly in its segment
    with pytest.raises(AAEError, match="width -1.0: must be >= 0"):
        SwissRollPrior(width=-1.0)


def test_swiss_roll_without_labels_is_the_whole_roll():
    prior = SwissRollPrior()
    z = seeded(prior)
    u = (z.norm(dim=1) / prior.radius) ** 2  # uniform on [0, 1]
    assert 0 <= u.min() and u.max() <= 1 + 1e-5
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.std().item() == pytest.approx(1 / math.sqrt(12), rel=0.01)
    freq = prior.assign(z).bincount(minlength=10).float() / N
    assert torch.allclose(freq, torch.full((10,), 0.1), atol=0.005)


# ----------------------------------------------------------------------------------------------
# Uniform box, categorical


@pytest.mark.parametrize("dim, half_width", [(2, 1.0), (5, 3.0), (1, 0.2)])
def test_uniform_prior_fills_its_box(dim, half_width):
    z = seeded(UniformPrior(dim, half_width))
    assert z.shape == (N, dim)
    assert z.abs().max() <= half_width
    assert z.abs().max() > 0.999 * half_width  # reaches the edges
    assert torch.allclose(z.mean(0), torch.zeros(dim), atol=0.01 * half_width)
    assert torch.allclose(z.std(0), torch.full((dim,), half_width / math.sqrt(3)), rtol=0.01)


@pytest.mark.parametrize("k", [10, 16, 2])
def test_categorical_prior_is_one_hot_and_uniform(k):
    prior = CategoricalPrior(k)
    z = seeded(prior)
    assert z.shape == (N, k) and prior.dim == k
    assert torch.all((z == 0) | (z == 1)) and torch.all(z.sum(1) == 1)
    assert torch.allclose(z.mean(0), torch.full((k,), 1 / k), atol=0.005)
    labels = per_class(100, k)
    assert torch.equal(prior.sample(100, labels).argmax(1), labels)


# ----------------------------------------------------------------------------------------------
# Labels: -1 is "no label"; the stream does not depend on which rows are labeled


@pytest.mark.parametrize("prior", [MixturePrior(), SwissRollPrior(), CategoricalPrior(10)],
                         ids=["mixture", "swiss-roll", "categorical"])  # fmt: skip
def test_label_minus_one_samples_the_whole_prior(prior):
    labels = torch.where(torch.arange(N) % 2 == 0, torch.tensor(3), torch.tensor(-1))
    z = seeded(prior, labels=labels)
    part = prior.assign(z) if hasattr(prior, "assign") else z.argmax(1)
    assert (part[labels == 3] == 3).float().mean() > 0.99  # (the mixture: see assign())
    freq = part[labels == -1].bincount(minlength=10).float() / (N // 2)
    assert torch.allclose(freq, torch.full((10,), 0.1), atol=0.01)
    # The unlabeled rows are exactly what an unlabeled draw gives them.
    assert torch.equal(z[labels == -1], seeded(prior)[labels == -1])


@pytest.mark.parametrize("labels, match", [
    (torch.tensor([0, 10]), "must be in -1..9"),
    (torch.tensor([-2, 0]), "must be in -1..9"),
    (torch.tensor([0, 1, 2]), r"shape \(2,\)"),
    (torch.tensor([0.0, 1.0]), "integer tensor"),
])  # fmt: skip
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(AAEError, match=match):
        MixturePrior().sample(2, labels=labels)


# ----------------------------------------------------------------------------------------------
# make_prior


@pytest.mark.parametrize("name, cls", [("gaussian", GaussianPrior), ("mixture", MixturePrior),
                                       ("swiss-roll", SwissRollPrior), ("uniform", UniformPrior),
                                       ("categorical", CategoricalPrior)])  # fmt: skip
def test_make_prior_builds_each_by_name(name, cls):
    prior = make_prior(name, 2, std=2.0, scale=4.0, components=6, std_along=0.3, std_across=0.1)
    assert type(prior) is cls and prior.dim == 2
    torch.manual_seed(0)
    assert prior.sample(7).shape == (7, 2)
    expected = {"gaussian": {"std": 2.0},
                "mixture": {"radius": 4.0, "num_classes": 6, "std_along": 0.3, "std_across": 0.1},
                "swiss-roll": {"radius": 4.0, "num_classes": 6, "width": 0.1},
                "uniform": {"half_width": 4.0}, "categorical": {"num_classes": 2}}[name]  # fmt: skip
    assert {k: getattr(prior, k) for k in expected} == expected  # every argument its prior reads
    assert name == "categorical" or name in PRIORS


def test_make_prior_defaults_are_the_papers():
    m = make_prior("mixture", 2)
    assert (m.num_classes, m.radius, m.std_along, m.std_across) == (10, 1.4, 0.5, 0.05)
    s = make_prior("swiss-roll", 2)
    assert (s.num_classes, s.radius, s.turns, s.width) == (10, 3.0, 2.0, 0.05)
    assert make_prior("uniform", 3).half_width == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: make_prior("bogus", 2), "unknown prior 'bogus'"),
    (lambda: make_prior("mixture", 3), "2-D: use --z-dim 2, not 3"),
    (lambda: make_prior("swiss-roll", 1), "2-D: use --z-dim 2, not 1"),
    (lambda: MixturePrior(0), "num_classes 0"),
    (lambda: MixturePrior(radius=-1.0), "radius -1.0"),
    (lambda: SwissRollPrior(turns=float("nan")), "turns nan"),
    (lambda: UniformPrior(2, 0.0), "half_width 0.0"),
    (lambda: CategoricalPrior(0), "num_classes 0"),
    (lambda: GaussianPrior(2, float("inf")), "std inf: must be positive and finite"),
    # Samples of inf in float32, then NaN losses reported as a divergence ("lower the learning rates"):
    (lambda: GaussianPrior(2, 1e300), r"std 1e\+300: must be at most 3.4e\+38, float32's largest value"),
    (lambda: SwissRollPrior(width=1e39), r"width 1e\+39: must be at most 3.4e\+38"),
    (lambda: GaussianPrior(2.5), "dim 2.5: must be an integer"),
    (lambda: MixturePrior(2.5), "num_classes 2.5: must be an integer"),
    (lambda: UniformPrior(2.7), "dim 2.7: must be an integer"),
])  # fmt: skip
def test_bad_prior_arguments_are_refused(call, match):
    with pytest.raises(AAEError, match=match):
        call()


# ----------------------------------------------------------------------------------------------
# The config's prior fields


@pytest.mark.parametrize("kind, model, match", [
    ("unsupervised", dict(prior="swiss-roll", z_dim=8), "swiss-roll is 2-D: use --z-dim 2, not 8"),
    ("unsupervised", dict(prior="uniform", condition_labels=100), "--condition-labels needs"),
    ("unsupervised", dict(prior="mixture", prior_scale=0.0), "--prior-scale 0.0"),
    ("unsupervised", dict(prior="mixture", prior_std_across=-1.0), "--prior-std-across -1.0"),
    ("unsupervised", dict(prior="mixture", condition_labels=-5), "--condition-labels -5"),
    ("semi-supervised", dict(prior="mixture"), "--prior mixture: only the unsupervised model"),
    ("supervised", dict(prior="mixture", condition_labels=10), "--condition-labels 10: only the"),
])  # fmt: skip
def test_config_refuses_priors_it_cannot_build(kind, model, match):
    from torch_aae.config import Config, ModelConfig

    with pytest.raises(AAEError, match=match):
        Config(kind, model=ModelConfig(**model))


@pytest.mark.parametrize("prior, scale, expected", [
    ("mixture", None, ("radius", 1.4)),
    ("swiss-roll", 2.0, ("radius", 2.0)),
    ("uniform", 0.5, ("half_width", 0.5)),
])  # fmt: skip
def test_config_fields_reach_the_models_prior(prior, scale, expected):
    from torch_aae.config import ModelConfig
    from torch_aae.unsupervised import UnsupervisedAAE

    cfg = ModelConfig(prior=prior, prior_scale=scale, prior_components=7, hidden=8, disc_hidden=8)
    model = UnsupervisedAAE.from_config(cfg, 16, (4, 4))
    assert getattr(model.prior, expected[0]) == expected[1]
    assert getattr(model.prior, "num_classes", 7) == 7


def test_sample_on_draws_on_the_device_where_the_prior_can_and_moves_the_rest():
    from torch_aae.priors import GaussianPrior, sample_on

    calls = []

    class Plain:  # a user's prior: sample(n, labels=None), no device argument
        dim = 2

        def sample(self, n, labels=None):
            calls.append(labels)
            return torch.zeros(n, 2)

    out = sample_on(Plain(), 5, "cpu")
    assert out.shape == (5, 2) and calls == [None]
    labels = torch.tensor([0, 1, -1])
    sample_on(Plain(), 3, "cpu", labels)
    assert calls[-1] is labels
    torch.manual_seed(0)
    a = sample_on(GaussianPrior(3, 2.0), 4, "cpu")
    torch.manual_seed(0)
    assert torch.equal(a, GaussianPrior(3, 2.0).sample(4))  # the same draw, made in place


def test_numpy_integer_counts_are_counts():
    import numpy as np

    assert MixturePrior(np.int64(5)).num_classes == 5 and CategoricalPrior(np.int32(3)).dim == 3


def test_a_users_prior_that_draws_on_the_device_is_checked_too():
    from torch_aae.priors import sample_on

    class OnDevice:
        dim = 2

        def sample(self, n, labels=None, device=None):
            return torch.zeros(n, 3, device=device, dtype=torch.float64)

    with pytest.raises(AAEError, match=r"sample\(4\) gave a torch.float64 tensor of shape \(4, 3\); expected a float32 tensor \(4, 2\)"):
        sample_on(OnDevice(), 4, "cpu")


def test_a_conditioned_model_refuses_a_users_prior_that_takes_no_labels():
    from torch_aae.unsupervised import UnsupervisedAAE

    class Parts:
        dim, num_classes = 2, 10

        def sample(self, n):
            return torch.zeros(n, 2)

    with pytest.raises(AAEError, match=r"its sample\(n\) takes no labels"):
        UnsupervisedAAE(16, (4, 4), prior=Parts(), hidden=8, disc_hidden=8, condition_labels=100)
    UnsupervisedAAE(16, (4, 4), prior=Parts(), hidden=8, disc_hidden=8)  # unconditioned: fine
    with pytest.raises(AAEError, match="condition_labels -3: must be an integer >= 0"):
        UnsupervisedAAE(16, (4, 4), prior="mixture", hidden=8, disc_hidden=8, condition_labels=-3)


@pytest.mark.parametrize("prior, model, fragment", [
    ("gaussian", dict(prior_components=5), "--prior-components 5: the gaussian prior does not read it; only the mixture, swiss-roll priors do"),
    ("mixture", dict(prior_std=3.0), "--prior-std 3.0: the mixture prior does not read it; only the gaussian prior does"),
    ("swiss-roll", dict(prior_std_along=0.2), "--prior-std-along 0.2: the swiss-roll prior"),
    ("uniform", dict(prior_std_across=0.3), "--prior-std-across 0.3: the uniform prior"),
])  # fmt: skip
def test_each_prior_refuses_the_fields_it_does_not_read(prior, model, fragment):
    from torch_aae.config import Config, ModelConfig, refuse_unread

    z = dict(z_dim=2) if prior in ("mixture", "swiss-roll") else {}
    with pytest.raises(AAEError) as err:
        refuse_unread(Config("unsupervised", model=ModelConfig(prior=prior, **z, **model)))
    assert fragment in str(err.value)
    # A bare swiss roll (width 0) may be asked for, as the prior allows.
    refuse_unread(Config("unsupervised", model=ModelConfig(prior="swiss-roll", z_dim=2, prior_std_across=0.0)))
