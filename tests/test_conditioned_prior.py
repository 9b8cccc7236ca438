"""The label-conditioned prior (paper section 2.3, Fig. 4) in the unsupervised AAE."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import REPO_ROOT, subset_of, synthetic_dataset, tiny_model, tiny_train

from torch_aae import cli, unsupervised
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.errors import AAEError
from torch_aae.train import fit

K = 3  # classes of the synthetic data = parts of the prior


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n=120, shape=(4, 4), classes=K, test=30)  # labels i % 3


def conditioned(prior="mixture", labels=30, seed=0):
    return tiny_model(seed, in_dim=16, image_shape=(4, 4), prior=prior, prior_components=K,
                      condition_labels=labels)  # fmt: skip


def config_of(model, seed=0, **train):
    names = set(ModelConfig.__dataclass_fields__)
    model_cfg = ModelConfig(**{k: v for k, v in model.model_args.items() if k in names})
    return Config("unsupervised", DataConfig(), model_cfg, tiny_train(seed=seed, **train))


def disc_inputs(model):
    """Record every input (batch, features) of the latent discriminator."""
    seen = []
    model.latent_discriminator.register_forward_hook(lambda m, a, out: seen.append(a[0].detach()))
    return seen


@pytest.mark.parametrize("prior", ["mixture", "swiss-roll"])
def test_discriminator_gets_the_code_and_k_plus_one_label_states(data, prior):
    model = conditioned(prior)
    assert model.latent_discriminator.net[0].in_features == 2 + K + 1
    assert model.condition_classes == K
    unconditioned = tiny_model(in_dim=16, image_shape=(4, 4), prior=prior, prior_components=K)
    assert unconditioned.latent_discriminator.net[0].in_features == 2
    seen = disc_inputs(model)
    opt = unsupervised.make_optimizers(model, tiny_train())
    y = torch.tensor([0, 1, 2, -1, -1, 0])
    unsupervised.train_step(model, opt, data.train_x[:6], y, None, 0)
    both, gen = seen  # discriminator phase (prior samples and codes in one pass), generator phase
    real, fake = both.chunk(2)
    expected_onehot = torch.eye(K + 1)[[0, 1, 2, K, K, 0]]  # -1 -> the extra "no label" state
    for t in (real, fake, gen):
        assert t.shape == (6, 2 + K + 1)
        assert torch.equal(t[:, 2:], expected_onehot)


@pytest.mark.parametrize("prior", ["mixture", "swiss-roll"])
def test_labeled_codes_meet_their_class_part_unlabeled_ones_the_whole_prior(data, prior):
    model = conditioned(prior)
    seen = disc_inputs(model)
    opt = unsupervised.make_optimizers(model, tiny_train())
    n = 3000
    y = torch.where(torch.arange(n) % 2 == 0, torch.arange(n) % K, torch.tensor(-1))
    x = data.train_x[torch.arange(n) % len(data.train_x)]
    torch.manual_seed(0)
    unsupervised.train_step(model, opt, x, y, None, 0)
    real = seen[0][:n]  # the discriminator pass: prior samples first, then the codes
    part = model.prior.assign(real[:, :2])
    labeled = y >= 0
    # Mixture: assign() goes by angle, so a rare sample near the origin can look misplaced.
    assert (part[labeled] == y[labeled]).float().mean() > 0.99
    counts = part[~labeled].bincount(minlength=K).float() / (~labeled).sum()
    assert torch.allclose(counts, torch.full((K,), 1 / K), atol=0.05)  # all of the prior
    assert torch.all(real[~labeled, 2 + K] == 1)  # in the "no label" state


def test_setup_hides_the_labels_of_unlabeled_images(data, tmp_path):
    model = conditioned(labels=30)
    ctx = unsupervised.setup(model, data, config_of(model, seed=2), "cpu", None)
    idx = torch.tensor(ctx["run_files"]["labeled_indices.json"])
    assert len(idx) == 30 and torch.bincount(data.train_y[idx], minlength=K).tolist() == [10] * K
    visible = ctx["train_y"]
    assert torch.equal(visible[idx], data.train_y[idx])
    mask = torch.ones(len(visible), dtype=torch.bool)
    mask[idx] = False
    assert torch.all(visible[mask] == -1)
    other = unsupervised.setup(model, data, config_of(model, seed=3), "cpu", None)
    assert other["run_files"] != ctx["run_files"]  # drawn by seed
    assert "train_y" not in unsupervised.setup(tiny_model(in_dim=16), data, config_of(model), "cpu", None)


def test_true_labels_of_unlabeled_images_never_reach_the_step(data, tmp_path, monkeypatch):
    model = conditioned(labels=30)
    row_of = {bytes(x.numpy()): i for i, x in enumerate(data.train_x)}
    seen = {}
    original = unsupervised.train_step

    def recording_step(model, opt, x, y, ctx, step):
        for xi, yi in zip(x, y):
            seen[row_of[bytes(xi.numpy())]] = int(yi)
        return original(model, opt, x, y, ctx, step)

    monkeypatch.setattr(unsupervised, "train_step", recording_step)
    config = config_of(model)
    fit(model, data, config.train, out=tmp_path / "run", config=config, progress=False)
    labeled = set(json.loads((tmp_path / "run" / "labeled_indices.json").read_text()))
    assert len(labeled) == 30 and len(seen) == len(data.train_x)  # every image, once an epoch
    for i, label in seen.items():
        assert label == (int(data.train_y[i]) if i in labeled else -1), i


class StepRecorder:
    """Which parameters each phase's optimizer step changed."""

    def __init__(self, model, optimizers):
        self.model, self.changed, self.before = model, {}, {}
        for phase, opt in optimizers.items():
            opt.register_step_pre_hook(lambda o, a, k, phase=phase: self._pre())
            opt.register_step_post_hook(lambda o, a, k, phase=phase: self._post(phase))

    def _pre(self):
        self.before = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _post(self, phase):
        self.changed[phase] = {n for n, p in self.model.named_parameters()
                               if not torch.equal(p, self.before[n])}  # fmt: skip


@pytest.mark.parametrize("phase, owners", [("recon", ("encoder.", "decoder.")),
                                           ("disc", ("latent_discriminator.",)),
                                           ("gen", ("encoder.",))])  # fmt: skip
def test_each_phase_changes_only_its_own_parameters(data, phase, owners):
    model = conditioned()
    opt = unsupervised.make_optimizers(model, tiny_train(lr_recon=1e-2, lr_reg=1e-2))
    rec = StepRecorder(model, opt)
    unsupervised.train_step(model, opt, data.train_x[:20], data.train_y[:20], None, 0)
    assert rec.changed[phase] == {n for n, _ in model.named_parameters() if n.startswith(owners)}


def test_conditioned_run_resumes_bitwise(data, tmp_path):
    def run(out, epochs, resume=False):
        model = conditioned(seed=1)
        config = config_of(model, seed=1, epochs=epochs)
        fit(model, data, config.train, out=out, resume=resume, config=config, progress=False)
        return model

    run(tmp_path / "run", 1)
    resumed = run(tmp_path / "run", 2, resume=True)
    straight = run(None, 2)
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(run(None, 1).encoder.net[0].weight, straight.encoder.net[0].weight)


def test_model_args_rebuild_the_conditioned_model(tmp_path):
    from torch_aae.checkpoint import load_model, save_model

    model = conditioned("swiss-roll")
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.model_args == model.model_args and loaded.condition_classes == K
    assert loaded.model_args["condition_labels"] == 30
    # A Gaussian, unconditioned model keeps the model_args of earlier versions.
    assert set(tiny_model().model_args) == {"in_dim", "image_shape", "z_dim", "hidden", "depth",
                                            "disc_hidden", "disc_depth", "dropout", "prior",
                                            "prior_std"}  # fmt: skip


@pytest.mark.parametrize("make, match", [
    (lambda d: (conditioned(labels=31), d), "divisible by the 3 classes"),
    (lambda d: (tiny_model(in_dim=16, image_shape=(4, 4), prior="mixture", condition_labels=30), d),
     "the prior has 10 parts, the data 3 classes"),
    (lambda d: (conditioned(), dataclasses.replace(d, train_y=None)), "no labels"),
])  # fmt: skip
def test_setup_refuses_bad_requests(data, make, match):
    model, d = make(data)
    with pytest.raises(AAEError, match=match):
        unsupervised.setup(model, d, config_of(model), "cpu", None)


def test_conditioning_needs_a_prior_made_of_parts():
    with pytest.raises(AAEError, match="needs a prior made of parts"):
        tiny_model(prior="uniform", condition_labels=10)


def test_cli_trains_a_conditioned_mixture_and_plots_it(tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli.main(["train", "unsupervised", "--prior", "mixture", "--condition-labels", "50",
                   "--subset", "300", "--epochs", "1", "--hidden", "32", "--disc-hidden", "32",
                   "--no-progress", "--data-dir", str(REPO_ROOT / "data"),
                   "--out", str(run)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["test_part_accuracy"] <= 1  # its value: test_part_accuracy_and_shares_known_answer
    assert 0 <= summary["part_share_min"] <= 1 / 10 <= summary["part_share_max"] <= 1
    assert len(json.loads((run / "labeled_indices.json").read_text())) == 50
    assert json.loads((run / "config.json").read_text())["model"]["condition_labels"] == 50
    assert (run / "plots" / "latent.png").stat().st_size > 1000


def test_part_accuracy_and_shares_known_answer(data):
    """The final metrics of codes placed by hand: 30 test codes on the parts [0]*15 + [1]*10 +
    [2]*5 of a 3-part mixture, against the labels i % 3."""
    model = conditioned("mixture")
    parts = torch.tensor([0] * 15 + [1] * 10 + [2] * 5)
    model.encode = lambda x: model.prior.directions(parts[: len(x)]) * 1.4  # each part's mean
    metrics = unsupervised.evaluate(model, data, "cpu")
    right = (parts == data.test_y).float().mean().item()  # 5 + 3 + 2 of the 30 sit in their class's part
    assert right == pytest.approx(10 / 30)
    assert metrics["test_part_accuracy"] == pytest.approx(right)
    assert (metrics["part_share_min"], metrics["part_share_max"]) == pytest.approx((5 / 30, 15 / 30))


def test_instance_noise_falls_linearly_to_zero_over_the_run():
    ctx = {"disc_noise": 0.6, "total_steps": 100}
    assert [unsupervised.instance_noise(ctx, s) for s in (0, 50, 100, 150)] == pytest.approx(
        [0.6, 0.3, 0.0, 0.0])
    assert unsupervised.instance_noise({"disc_noise": 0.0, "total_steps": 100}, 0) == 0.0
    assert unsupervised.instance_noise(None, 0) == 0.0


def test_instance_noise_blurs_the_codes_on_both_sides_not_the_labels(data):
    model = conditioned("swiss-roll")
    seen = disc_inputs(model)
    codes = []  # the encoder's outputs: the reconstruction pass, then the codes of phases 2-3
    model.encoder.register_forward_hook(lambda m, a, out: codes.append(out.detach()))
    drawn, sample = [], model.prior.sample  # the prior's own draws, before any noise
    model.prior.sample = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
    opt = unsupervised.make_optimizers(model, tiny_train())
    y = torch.tensor([0, 1, 2, -1, -1, 0]).repeat(400)  # 2,400 rows: the noise's std to 5%
    x = data.train_x[:6].repeat(400, 1)
    ctx = {"disc_noise": 2.0, "total_steps": 10}
    expected_onehot = torch.eye(K + 1)[[0, 1, 2, K, K, 0] * 400]
    torch.manual_seed(0)
    unsupervised.train_step(model, opt, x, y, ctx, 0)
    real, fake = seen[0].chunk(2)
    moved = (fake[:, :2] - codes[1]).std()  # moved by noise of std 2 (its full size at step 0)
    assert float(moved) == pytest.approx(2.0, rel=0.05)
    assert len(drawn) == 1 and float((real[:, :2] - drawn[0]).std()) == pytest.approx(2.0, rel=0.05)  # and the prior's
    assert torch.equal(fake[:, 2:], expected_onehot) and torch.equal(real[:, 2:], expected_onehot)
    torch.testing.assert_close(seen[1], fake)  # the generator phase sees the same blurred codes
    # At the end of the run the noise is gone: the discriminator sees the codes themselves.
    seen.clear(), codes.clear(), drawn.clear()
    unsupervised.train_step(model, opt, x, y, ctx, 10)
    real, fake = seen[0].chunk(2)
    assert torch.equal(fake[:, :2], codes[1]) and torch.equal(real[:, :2], drawn[0])


def test_disc_noise_is_the_unsupervised_models_alone():
    with pytest.raises(AAEError, match="--disc-noise 0.5: the semi-supervised model does not take it"):
        Config("semi-supervised", train=tiny_train(disc_noise=0.5))
    with pytest.raises(AAEError, match="--disc-noise -1"):
        tiny_train(disc_noise=-1.0)


def test_disc_noise_refuses_another_length_on_resume_and_branch(mnist, tmp_path):
    """Its schedule falls to 0 over --epochs: a resume or branch with other epochs silently
    restarted the noise midway (and a branch was no longer equal to a run trained so)."""
    from torch_aae.run_folder import check_resumable

    data = subset_of(mnist, 100)
    run = tmp_path / "run"
    fit(tiny_model(), data, tiny_train(epochs=1, batch_size=50, disc_noise=0.5), out=run, progress=False)
    message = "has --disc-noise 0.5, which falls to 0 over its 1 epochs: --epochs 2 would change that schedule"
    with pytest.raises(AAEError, match=message):
        fit(tiny_model(), data, tiny_train(epochs=2, batch_size=50, disc_noise=0.5), out=run, resume=True,
            progress=False)  # fmt: skip
    saved = Config(train=tiny_train(epochs=1, disc_noise=0.5))
    with pytest.raises(AAEError, match=message):
        check_resumable(saved, Config(train=tiny_train(epochs=2, disc_noise=0.5)), what="branch: the checkpoint")
    check_resumable(Config(train=tiny_train(epochs=1)), Config(train=tiny_train(epochs=2)))  # no noise: allowed
    check_resumable(saved, Config(train=tiny_train(epochs=1, disc_noise=0.5, log_every=7)))


def test_reloading_with_a_custom_prior_of_other_parts_names_the_parts(tmp_path):
    """The discriminator reads K + 1 label states: a prior of other parts gave PyTorch's size
    mismatch of a discriminator layer, which did not say that the prior was the cause."""
    from torch_aae.checkpoint import load_model, save_model

    class Parts:
        dim = 2

        def __init__(self, k):
            self.num_classes = k

        def sample(self, n, labels=None):
            return torch.zeros(n, 2)

    save_model(tiny_model(in_dim=16, image_shape=(4, 4), prior=Parts(K), condition_labels=30), tmp_path / "m.pt")
    with pytest.raises(AAEError, match=r"m.pt: the run's prior had 3 parts \(num_classes\); prior= has 5"):
        load_model(tmp_path / "m.pt", prior=Parts(5))
    assert load_model(tmp_path / "m.pt", prior=Parts(K)).condition_classes == K


def test_a_custom_prior_model_saved_with_another_prior_std_still_loads(tmp_path):
    """Earlier versions recorded prior_std beside "custom" whatever it was; the constructor now
    refuses a prior_std with a custom prior, which must not lock such a model out."""
    from torch_aae.checkpoint import load_model, save_model

    class Box:
        dim = 2

        def sample(self, n, labels=None):
            return torch.rand(n, 2)

    model = tiny_model(in_dim=16, image_shape=(4, 4), prior=Box())
    model.model_args["prior_std"] = 1.0  # as such a version saved it
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", prior=Box())
    assert loaded.model_args == model.model_args  # kept as recorded: a resume compares them
    assert torch.equal(loaded.state_dict()["latent_discriminator.net.0.weight"],
                       model.state_dict()["latent_discriminator.net.0.weight"])  # fmt: skip
