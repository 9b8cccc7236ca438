"""Configuration dataclasses: validation, JSON round trip, unknown keys and wrong types."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from torch_aae import config as C
from torch_aae.errors import AAEError


def test_defaults_validate_and_match_the_blog():
    cfg = C.Config()
    assert cfg.model_kind == "unsupervised"
    assert (cfg.model.z_dim, cfg.model.prior, cfg.model.prior_std) == (2, "gaussian", 5.0)
    assert (cfg.model.hidden, cfg.model.depth, cfg.model.disc_hidden) == (1000, 2, 1000)
    assert (cfg.train.batch_size, cfg.train.device, cfg.train.checkpoint_every) == (100, "auto", 0)
    assert cfg.data == C.DataConfig(dataset="mnist")
    assert C.from_dict({}) == cfg


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.TrainConfig().epochs = 3


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (C.TrainConfig, {"epochs": 0}, "--epochs 0: must be positive"),
        (C.TrainConfig, {"epochs": -1}, "--epochs -1"),
        (C.TrainConfig, {"batch_size": 0}, "--batch-size 0"),
        (C.TrainConfig, {"lr_recon": 0.0}, "--lr-recon"),
        (C.TrainConfig, {"lr_reg": -1e-3}, "--lr-reg"),
        (C.TrainConfig, {"lr_recon": float("nan")}, "--lr-recon nan"),
        (C.TrainConfig, {"log_every": 0}, "--log-every"),
        (C.TrainConfig, {"beta1_reg": 1.0}, "--beta1-reg"),
        (C.TrainConfig, {"beta1_reg": -0.1}, "--beta1-reg"),
        (C.TrainConfig, {"checkpoint_every": -1}, "--checkpoint-every"),
        (C.TrainConfig, {"device": "tpu"}, "--device 'tpu'"),
        (C.TrainConfig, {"device": "CPU"}, "--device"),
        (C.TrainConfig, {"device": ""}, "--device"),
        (C.TrainConfig, {"device": "cudax"}, "--device"),
        (C.TrainConfig, {"lr_reg": float("inf")}, "--lr-reg inf"),
        (C.ModelConfig, {"dropout": 1.0}, "--dropout 1.0: must be in [0, 1)"),
        (C.ModelConfig, {"dropout": 1.5}, "--dropout"),
        (C.ModelConfig, {"dropout": -0.1}, "--dropout"),
        (C.ModelConfig, {"z_dim": 0}, "--z-dim 0"),
        (C.ModelConfig, {"hidden": -5}, "--hidden"),
        (C.ModelConfig, {"depth": 0}, "--depth"),
        (C.ModelConfig, {"disc_hidden": 0}, "--disc-hidden"),
        (C.ModelConfig, {"disc_depth": 0}, "--disc-depth"),
        (C.ModelConfig, {"prior_std": 0.0}, "--prior-std"),
        (C.DataConfig, {"subset": 0}, "--subset 0"),
        (C.DataConfig, {"val_size": -1}, "--val-size -1"),
        (C.DataConfig, {"labels": "0"}, "--labels 0"),
        (C.DataConfig, {"labels": "-10"}, "--labels -10"),
        (C.DataConfig, {"labels": "some"}, "give a number of images or 'all'"),
        # Accepted before, then blamed on the learning rates as a diverged loss:
        (C.TrainConfig, {"input_noise": float("inf")}, "--input-noise inf: must be finite"),
        (C.TrainConfig, {"code_noise": float("inf")}, "--code-noise inf: must be finite"),
        (C.TrainConfig, {"cat_noise": float("inf")}, "--cat-noise inf: must be finite"),
        (C.TrainConfig, {"label_elastic": float("inf")}, "--label-elastic inf: must be finite"),
        (C.ModelConfig, {"head_distance": float("nan")}, "--head-distance nan: must be finite"),
        # A traceback before (an int64 overflow in a seed derived from it):
        (C.TrainConfig, {"seed": 2**64}, "--seed 18446744073709551616: must be below 2**46 in magnitude"),
        (C.TrainConfig, {"seed": 9223372036854775000}, "--seed 9223372036854775000: must be below 2**46"),
        (C.TrainConfig, {"seed": -(2**46)}, "--seed -70368744177664: must be below 2**46"),
        (C.DataConfig, {"data_seed": 2**46}, "--data-seed 70368744177664: must be below 2**46"),
    ],
)
def test_bad_values_are_refused(cls, kwargs, message):
    with pytest.raises(AAEError) as err:
        cls(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (C.TrainConfig, {"device": "cpu"}),
        (C.TrainConfig, {"device": "cuda:1"}),
        (C.TrainConfig, {"checkpoint_every": 0, "beta1_reg": 0.0}),
        (C.ModelConfig, {"dropout": 0.0, "z_dim": 8}),
        (C.DataConfig, {"subset": 1, "val_size": 0, "labels": "all"}),
        (C.DataConfig, {"labels": "100"}),
    ],
)
def test_good_values_are_accepted(cls, kwargs):
    cfg = cls(**kwargs)
    for key, value in kwargs.items():
        assert getattr(cfg, key) == value


def _custom() -> C.Config:
    return C.Config(
        data=C.DataConfig(dataset="my.npz", data_dir="/tmp/d", subset=300, val_size=10, labels="20"),
        model=C.ModelConfig(z_dim=5, hidden=64, disc_hidden=32, dropout=0.0, prior_std=1.5),
        train=C.TrainConfig(epochs=3, lr_recon=0.01, seed=7, device="cpu", checkpoint_every=5),
    )


@pytest.mark.parametrize("cfg", [C.Config(), _custom()], ids=["defaults", "custom"])
def test_round_trip_through_json(cfg):
    d = cfg.to_dict()
    assert set(d) == {"model_kind", "data", "model", "train"}
    assert C.from_dict(d) == cfg
    assert C.from_dict(json.loads(json.dumps(d))) == cfg


def test_missing_keys_take_defaults():
    cfg = C.from_dict({"train": {"epochs": 4}})
    assert cfg.train.epochs == 4 and cfg.train.batch_size == 100
    assert cfg.model == C.ModelConfig() and cfg.data == C.DataConfig()


@pytest.mark.parametrize(
    "d, message",
    [
        ({"modle": {}}, "unknown config keys: modle"),
        ({"model": {}, "extra": 1, "zzz": 2}, "unknown config keys: extra, zzz"),
        ({"model": {"zdim": 3}}, "unknown keys in config section 'model': zdim"),
        ({"train": {"epochs": 3, "lr": 0.1}}, "unknown keys in config section 'train': lr"),
        ({"data": {"dataset": "mnist", "path": "x"}}, "section 'data': path"),
    ],
)
def test_unknown_keys_are_rejected(d, message):
    with pytest.raises(AAEError) as err:
        C.from_dict(d)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "epochs", "3"),
        ("train", "epochs", 3.0),
        ("train", "epochs", True),
        ("train", "epochs", None),
        ("train", "lr_recon", "0.1"),
        ("train", "lr_recon", False),
        ("train", "device", 0),
        ("model", "z_dim", [2]),
        ("model", "dropout", None),
        ("model", "prior", None),
        ("data", "subset", "300"),
        ("data", "dataset", None),
        ("train", "cuda_graphs", "yes"),
        ("train", "cuda_graphs", 1),
    ],
)
def test_wrong_types_are_rejected(section, key, value):
    with pytest.raises(AAEError, match=f"config {section}.{key}: expected"):
        C.from_dict({section: {key: value}})


def test_labels_given_as_a_number_ask_for_the_string_the_command_line_takes():
    with pytest.raises(AAEError, match='labels 100: give it as a string, labels="100"'):
        C.DataConfig(labels=100)
    with pytest.raises(AAEError, match="config data.labels: expected"):
        C.from_dict({"data": {"labels": True}})


@pytest.mark.parametrize(
    "section, key, value",
    [("train", "lr_recon", 1), ("model", "prior_std", 2), ("data", "subset", None), ("train", "cuda_graphs", True),
     ("data", "data_dir", None), ("data", "labels", None)],  # fmt: skip
)
def test_compatible_types_are_accepted(section, key, value):
    cfg = C.from_dict({section: {key: value}})
    assert getattr(getattr(cfg, section), key) == value


def test_validation_applies_to_dicts_too():
    with pytest.raises(AAEError, match="--epochs 0"):
        C.from_dict({"train": {"epochs": 0}})


@pytest.mark.parametrize("d", [[], "config", None, {"model": [1, 2]}, {"train": "fast"}])
def test_non_mapping_config_or_section(d):
    with pytest.raises(AAEError, match="must be a mapping"):
        C.from_dict(d)


def test_cli_flags_are_generated_from_the_fields():
    import argparse

    parser = argparse.ArgumentParser()
    for section in C.SECTIONS.values():
        C.add_arguments(parser, section)
    ns = parser.parse_args(["--z-dim", "3", "--lr-recon", "0.01", "--subset", "50", "--device", "cpu"])
    assert C.from_namespace(C.ModelConfig, ns) == C.ModelConfig(z_dim=3)
    assert C.from_namespace(C.TrainConfig, ns) == C.TrainConfig(lr_recon=0.01, device="cpu")
    assert C.from_namespace(C.DataConfig, ns, val_size=4) == C.DataConfig(subset=50, val_size=4)
    flags = {a for action in parser._actions for a in action.option_strings}
    for section in C.SECTIONS.values():
        for f in dataclasses.fields(section):
            assert "--" + f.name.replace("_", "-") in flags


@pytest.mark.parametrize("kind, field", [("unsupervised", "cat_noise"), ("supervised", "input_noise"),
                                         ("supervised", "cat_noise")])  # fmt: skip
def test_noise_flags_are_refused_by_models_that_ignore_them(kind, field):
    from torch_aae.config import Config, DataConfig, ModelConfig, TrainConfig
    from torch_aae.errors import AAEError

    with pytest.raises(AAEError, match=f"--{field.replace('_', '-')} 0.3: the {kind} model does not take it"):
        Config(kind, DataConfig(), ModelConfig(), TrainConfig(**{field: 0.3}))
    Config("semi-supervised", DataConfig(labels="100"), ModelConfig(), TrainConfig(**{field: 0.3}))


@pytest.mark.parametrize(
    "kind, data, train, fragment",
    [
        ("unsupervised", {"labels": "100"}, {}, "--labels 100: the unsupervised model uses no labeled "
                                                "images (--condition-labels N"),
        ("unsupervised", {}, {"lr_sup": 0.5}, "--lr-sup 0.5: the unsupervised model has no supervised phase"),
        ("supervised", {"labels": "100"}, {"lr_sup": 0.5}, "--lr-sup 0.5: the supervised model has no"),
        ("clustering", {}, {"lr_sup": 0.5}, "--lr-sup 0.5: the clustering model has no supervised phase"),
        ("dim-reduction", {}, {"lr_sup": 0.5}, "has no supervised phase without --labels"),
    ],
)
def test_labels_and_lr_sup_are_refused_where_no_phase_reads_them(kind, data, train, fragment):
    config = C.Config(kind, C.DataConfig(**data), C.ModelConfig(clusters=10 if kind == "dim-reduction" else 0),
                      C.TrainConfig(**train))  # a config with them still loads (an old run evaluates)
    with pytest.raises(AAEError) as err:
        C.refuse_unread(config)  # what fit calls before any model's setup
    assert fragment in str(err.value)
    C.refuse_unread(C.Config("semi-supervised", C.DataConfig(labels="100"), train=C.TrainConfig(lr_sup=0.5)))


@pytest.mark.parametrize(
    "kind, model, train, fragment",
    [
        ("semi-supervised", {"prior_std_along": 3.0}, {}, "--prior-std-along 3.0: the semi-supervised model "
                                                          "does not read it; only the unsupervised model does"),
        ("clustering", {"clusters": 4, "prior_components": 5}, {}, "--prior-components 5: the clustering"),
        ("supervised", {"prior_scale": 2.0}, {}, "--prior-scale 2.0: the supervised"),
        ("dim-reduction", {"clusters": 10, "head_distance": 2.0, "prior_std_across": 0.1}, {},
         "--prior-std-across 0.1: the dim-reduction"),
    ],
)
def test_model_specific_fields_are_refused_by_the_other_models(kind, model, train, fragment):
    config = C.Config(kind, C.DataConfig(labels="100" if kind == "supervised" else None),
                      C.ModelConfig(**model), C.TrainConfig(**train))
    with pytest.raises(AAEError) as err:
        C.refuse_unread(config)
    assert fragment in str(err.value)
    # The model that reads the field takes it.
    C.refuse_unread(C.Config("unsupervised", model=C.ModelConfig(prior="mixture", prior_std_along=3.0)))


@pytest.mark.parametrize(
    "kind, given, fragment",
    [
        ("clustering", {"lr_sup"}, "--lr-sup 0.001: the clustering model has no supervised phase"),
        ("dim-reduction", {"lr_sup"}, "has no supervised phase without --labels"),
        ("unsupervised", {"cat_noise"}, "--cat-noise 0.0: the unsupervised model does not read it"),
        ("unsupervised", {"prior_components"}, "--prior-components 10: the gaussian prior does not read it"),
    ],
)
def test_a_flag_given_at_its_default_is_refused_where_it_is_not_read(kind, given, fragment):
    config = C.Config(kind, model=C.ModelConfig(clusters=4 if kind in ("clustering", "dim-reduction") else 0))
    C.refuse_unread(config)  # at their defaults and not given: nothing to say
    with pytest.raises(AAEError) as err:
        C.refuse_unread(config, given)  # the CLI passes the flags it was given
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "kind, model, train, fragment",
    [
        # whether the model takes a field is said before what is wrong with its value
        ("semi-supervised", {"condition_labels": 100}, {}, "--condition-labels 100: only the unsupervised model"),
        ("clustering", {"clusters": 4, "prior": "mixture"}, {}, "--prior mixture: only the unsupervised model"),
        ("unsupervised", {}, {"label_elastic_sigma": 3.0}, "--label-elastic-sigma 3.0: the unsupervised model "
                                                           "does not read it"),
        ("semi-supervised", {}, {"label_elastic_sigma": 3.0}, "it smooths --label-elastic's field, and "
                                                              "--label-elastic is 0"),
    ],
)
def test_a_field_the_model_does_not_take_is_named_before_its_value_is_checked(kind, model, train, fragment):
    with pytest.raises(AAEError) as err:
        C.Config(kind, model=C.ModelConfig(**model), train=C.TrainConfig(**train))
    assert fragment in str(err.value)


@pytest.mark.parametrize("command", [["sample", "RUN", "--out", "x.png"], ["evaluate", "RUN", "--parzen"],
                                     ["classifier", "train"]])  # fmt: skip
def test_the_other_commands_refuse_a_seed_out_of_range(command, capsys):
    from torch_aae import cli

    for seed, message in [(str(2**46), "70368744177664: a seed must be below 2**46 in magnitude"),
                          ("abc", "'abc': a seed is an integer")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "--seed", seed])
        assert exit_.value.code == 2
        assert f"argument --seed: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [-(2**46) + 1, -1, 2**46 - 1])
def test_the_extreme_seeds_train_their_derived_seeds_fit(seed):
    """Seeds that trained before the range check pass it (negative ones included), and the
    largest ones' derived seeds still seed a generator (2**46 * 100003 + epoch < 2**63)."""
    from torch_aae.train import epoch_permutation

    train = C.TrainConfig(seed=seed)
    assert len(epoch_permutation(5, train.seed, 10_000)) == 5
    with pytest.raises(ValueError, match="Overflow"):  # what the check guards against, far past it
        epoch_permutation(5, 2**64 // 100_003 + 1, 0)


def test_each_epoch_shuffles_the_images_anew_and_each_seed_otherwise():
    """An order that is a function of (seed, epoch) alone: resumed and distributed runs agree on
    it, which they would as well if it ignored the epoch, so that is checked here."""
    from torch_aae.train import epoch_permutation

    orders = [epoch_permutation(100, seed, epoch) for seed, epoch in [(0, 0), (0, 1), (1, 0)]]
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(100))  # each image once
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    assert torch.equal(epoch_permutation(100, 0, 1), orders[1])  # drawn again alike
