"""Model, priors, losses and metrics; the three training phases; a short real training run."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import PNG_MAGIC, subset_of, synthetic_dataset, tiny_model, tiny_train
from torch_aae import losses, metrics, unsupervised
from torch_aae.checkpoint import load_checkpoint
from torch_aae.config import Config, from_dict
from torch_aae.errors import AAEError
from torch_aae.priors import GaussianPrior, make_prior
from torch_aae.train import CHECKPOINT, fit
from torch_aae.unsupervised import UnsupervisedAAE, make_optimizers, train_step

# ----------------------------------------------------------------------------------------------
# Priors


@pytest.mark.parametrize("dim, std", [(2, 5.0), (3, 1.0), (1, 0.5)])
def test_gaussian_prior_shape_and_moments(dim, std):
    prior = GaussianPrior(dim, std)
    torch.manual_seed(0)
    z = prior.sample(200_000)
    assert z.shape == (200_000, dim) and z.dtype == torch.float32
    # Standard errors: mean ~ std / 447, std ~ std / 632; the tolerances are > 5 of them.
    assert torch.allclose(z.mean(0), torch.zeros(dim), atol=0.015 * std)
    assert torch.allclose(z.std(0), torch.full((dim,), std), rtol=0.01)
    # Per-dimension independence: off-diagonal correlations near 0.
    if dim > 1:
        corr = torch.corrcoef(z.T) - torch.eye(dim)
        assert corr.abs().max() < 0.015


def test_gaussian_prior_is_seeded_and_ignores_labels():
    prior = GaussianPrior(2, 5.0)
    torch.manual_seed(3)
    a = prior.sample(10)
    torch.manual_seed(3)
    b = prior.sample(10, labels=torch.arange(10))
    assert torch.equal(a, b)
    assert prior.sample(0).shape == (0, 2)


@pytest.mark.parametrize("dim, std", [(0, 1.0), (-2, 1.0), (2, 0.0), (2, -1.0), (2, float("nan"))])
def test_gaussian_prior_bad_args(dim, std):
    with pytest.raises(AAEError, match="must be positive"):
        GaussianPrior(dim, std)


def test_make_prior():
    prior = make_prior("gaussian", 4, 2.5)
    assert isinstance(prior, GaussianPrior) and (prior.dim, prior.std) == (4, 2.5)
    with pytest.raises(AAEError, match="unknown prior 'bogus'"):
        make_prior("bogus", 2, 1.0)
    with pytest.raises(AAEError, match="unknown prior"):
        UnsupervisedAAE(prior="bogus")


# ----------------------------------------------------------------------------------------------
# Losses and metrics


def test_losses_on_known_values():
    zeros = torch.zeros(4)
    assert losses.discriminator_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    assert losses.generator_loss(zeros).item() == pytest.approx(math.log(2))
    # A confident, correct discriminator has a small loss; a fooled one a large loss.
    big = torch.full((4,), 20.0)
    assert losses.discriminator_loss(big, -big).item() < 1e-6
    assert losses.discriminator_loss(-big, big).item() == pytest.approx(20.0, abs=1e-4)
    assert losses.generator_loss(big).item() < 1e-6
    logits, x = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.25]])
    p = torch.sigmoid(logits)
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).mean()
    assert losses.reconstruction_loss(logits, x).item() == pytest.approx(manual.item(), rel=1e-6)
    real, fake = losses.accuracy_real_fake(torch.tensor([1.0, -1, 2, 3]), torch.tensor([-1.0, 1]))
    assert (real.item(), fake.item()) == (0.75, 0.5)


def test_the_softplus_form_of_the_adversarial_losses_is_the_cross_entropy(monkeypatch):
    """CUDA's form of the discriminator and generator losses (fewer kernels) gives the CPU form's
    values and gradients, far into the tails (|logit| 40, past softplus's linear threshold)."""
    torch.manual_seed(0)
    real = torch.cat([torch.randn(60) * 5, torch.tensor([-40.0, 40.0])])
    fake = torch.cat([torch.randn(60) * 5, torch.tensor([40.0, -40.0])])

    def values_and_gradients():
        r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
        d = losses.discriminator_loss(r, f)
        g = losses.generator_loss(f)
        grads = torch.autograd.grad(d + 2 * g, [r, f])
        return torch.stack([d, g]).detach(), grads

    assert not losses._few_kernels(real)  # on CPU: the cross-entropy form
    expected, expected_grads = values_and_gradients()
    monkeypatch.setattr(losses, "_few_kernels", lambda t: True)
    got, grads = values_and_gradients()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_prior_match_on_known_codes():
    codes = np.array([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0), std (1, 0)
    out = metrics.prior_match(codes, prior_std=2.0)
    assert out == {"prior_mean_abs_max": 2.0, "prior_std_ratio_min": 0.0, "prior_std_ratio_max": 0.5}
    rng = np.random.default_rng(0)
    out = metrics.prior_match(rng.normal(0, 5, (100_000, 2)), prior_std=5.0)
    assert out["prior_mean_abs_max"] < 0.1
    assert 0.98 < out["prior_std_ratio_min"] <= out["prior_std_ratio_max"] < 1.02


def test_recon_bce_and_collect_do_not_depend_on_batching():
    model = tiny_model(in_dim=16, image_shape=(4, 4)).eval()
    x = synthetic_dataset(25).train_x
    assert metrics.recon_bce(model, x, "cpu", batch_size=7) == pytest.approx(
        metrics.recon_bce(model, x, "cpu", batch_size=1000), rel=1e-6
    )
    expected = losses.reconstruction_loss(model.decoder(model.encode(x)), x).item()
    assert metrics.recon_bce(model, x, "cpu") == pytest.approx(expected, rel=1e-6)
    codes = metrics.collect(model.encode, x, "cpu", batch_size=4)
    assert torch.allclose(codes, model.encode(x).detach())
    # Scored in eval mode, also for a model left in training mode: dropout off, the same each call.
    dropping = tiny_model(in_dim=16, image_shape=(4, 4), dropout=0.5)
    scored = metrics.recon_bce(dropping.train(), x, "cpu")
    assert scored == metrics.recon_bce(dropping.train(), x, "cpu")
    assert scored == pytest.approx(losses.reconstruction_loss(dropping.eval().reconstruct_logits(x), x).item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# The model


def test_model_shapes_and_ranges():
    model = tiny_model(z_dim=3, dropout=0.2).eval()
    x = torch.rand(7, 784)
    with torch.no_grad():
        z = model.encode(x)
        images = model.decode(z)
    assert z.shape == (7, 3)
    assert images.shape == (7, 784) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert model.latent_discriminator(z).shape == (7,)
    torch.manual_seed(0)
    assert model.sample(5).shape == (5, 784)
    assert model.z_dim == 3 and model.image_shape == (28, 28)
    assert model.model_args == dict(in_dim=784, image_shape=[28, 28], z_dim=3, hidden=32, depth=2,
                                    disc_hidden=32, disc_depth=2, dropout=0.2, prior="gaussian",
                                    prior_std=5.0)  # fmt: skip


def test_dropout_only_in_the_encoder():
    model = tiny_model(dropout=0.5)
    kinds = lambda m: [type(layer).__name__ for layer in m.net]  # noqa: E731
    assert kinds(model.encoder).count("Dropout") == 2
    assert "Dropout" not in kinds(model.decoder)
    assert "Dropout" not in kinds(model.latent_discriminator)
    x = torch.rand(4, 784)
    model.train()
    assert not torch.equal(model.encode(x), model.encode(x))  # stochastic in train mode
    model.eval()
    assert torch.equal(model.encode(x), model.encode(x))


def test_custom_prior_object():
    class Box:
        dim = 2

        def sample(self, n, labels=None):
            return torch.rand(n, 2) * 2 - 1

    model = tiny_model(prior=Box())
    assert model.model_args["prior"] == "custom"
    assert model.sample(3).shape == (3, 784)


def test_manifold_grid_corners():
    model = tiny_model().eval()
    grid = unsupervised.manifold(model, n=3)  # default extent: 2 prior std devs = 10
    assert grid.shape == (9, 784)
    with torch.no_grad():
        top_left = model.decode(torch.tensor([[-10.0, 10.0]]))[0]
        bottom_right = model.decode(torch.tensor([[10.0, -10.0]]))[0]
    assert torch.allclose(grid[0], top_left) and torch.allclose(grid[8], bottom_right)


# ----------------------------------------------------------------------------------------------
# The three phases of one training step


class PhaseRecorder:
    """Hooks on every optimizer's step: which parameters each phase's step changed, and the
    gradients seen around each step (with parameter names)."""

    def __init__(self, model, optimizers):
        self.model, self.order, self.changed = model, [], {}
        self.grads_before, self.grads_after, self.params_before = {}, {}, {}
        for phase, opt in optimizers.items():
            opt.register_step_pre_hook(lambda o, a, k, phase=phase: self._pre(phase))
            opt.register_step_post_hook(lambda o, a, k, phase=phase: self._post(phase))

    def _snapshot(self):
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _grads(self):
        return {n: None if p.grad is None else p.grad.clone() for n, p in self.model.named_parameters()}

    def _pre(self, phase):
        self.order.append(phase)
        self.params_before[phase] = self._snapshot()
        self.grads_before[phase] = self._grads()
        if phase == "gen":
            self.expected_gen_grads = self._independent_generator_grads()

    def _post(self, phase):
        after = self._snapshot()
        self.changed[phase] = {n for n, v in after.items() if not torch.equal(v, self.params_before[phase][n])}
        self.grads_after[phase] = self._grads()

    def _independent_generator_grads(self):
        """d generator_loss / d encoder at the current weights, computed from scratch."""
        m = self.model
        enc_params = list(m.encoder.parameters())
        loss = losses.generator_loss(m.latent_discriminator(m.encoder(self.x)))
        return torch.autograd.grad(loss, enc_params)


def _names(model, *parts):
    return {n for n, _ in model.named_parameters() if n.split(".")[0] in parts}


@pytest.fixture
def recorded_step(small_mnist):
    """One train_step of a tiny model on 50 real images, with every phase recorded."""
    model = tiny_model(hidden=32, disc_hidden=32).train()
    optimizers = make_optimizers(model, tiny_train(lr_recon=1e-2, lr_reg=1e-2))
    rec = PhaseRecorder(model, optimizers)
    rec.x = small_mnist.train_x[:50]
    torch.manual_seed(0)
    logs = train_step(model, optimizers, rec.x)
    return model, rec, logs


def test_phases_run_in_the_papers_order(recorded_step):
    _, rec, _ = recorded_step
    assert rec.order == ["recon", "disc", "gen"]


@pytest.mark.parametrize(
    "phase, owners",
    [("recon", ("encoder", "decoder")), ("disc", ("latent_discriminator",)), ("gen", ("encoder",))],
)
def test_each_phase_changes_only_its_own_parameters(recorded_step, phase, owners):
    model, rec, _ = recorded_step
    assert rec.changed[phase] == _names(model, *owners)


def test_discriminator_phase_does_not_leak_into_encoder_or_decoder(recorded_step):
    model, rec, _ = recorded_step
    ae = _names(model, "encoder", "decoder")
    # The encoder/decoder gradients at the disc step are still exactly the recon phase's:
    # the discriminator's backward pass (on detached codes) added nothing to them.
    for n in ae:
        assert rec.grads_after["recon"][n] is not None
        assert torch.equal(rec.grads_before["disc"][n], rec.grads_after["recon"][n]), n
    # ... and the discriminator had its own, non-zero gradients.
    for n in _names(model, "latent_discriminator"):
        assert rec.grads_before["disc"][n] is not None and rec.grads_before["disc"][n].abs().sum() > 0


def test_generator_phase_gradients_are_the_generator_loss_only(recorded_step):
    model, rec, _ = recorded_step
    enc = [n for n, _ in model.named_parameters() if n.startswith("encoder.")]
    # The encoder's gradient at the gen step is d(generator loss)/d(encoder), with no
    # reconstruction gradient left over from phase 1.
    for n, expected in zip(enc, rec.expected_gen_grads):
        assert torch.allclose(rec.grads_before["gen"][n], expected, atol=1e-7), n
    # The discriminator was frozen during the generator's backward pass: its gradients are
    # the disc phase's, untouched, and it is trainable again afterwards.
    for n in _names(model, "latent_discriminator"):
        assert torch.equal(rec.grads_before["gen"][n], rec.grads_after["disc"][n]), n
    assert all(p.requires_grad for p in model.parameters())


def test_train_step_logs(recorded_step):
    _, _, logs = recorded_step
    assert set(logs) == {"loss/recon", "loss/disc", "loss/gen", "acc/disc_real", "acc/disc_fake"}
    for key, value in logs.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad
        assert math.isfinite(value.item()), key
    assert 0 <= logs["acc/disc_real"].item() <= 1 and 0 <= logs["acc/disc_fake"].item() <= 1
    assert 0.2 < logs["loss/recon"].item() < 1.0  # BCE of an untrained net on MNIST pixels


def test_input_noise_reaches_the_encoder_and_not_the_reconstruction_target(small_mnist, monkeypatch):
    """--input-noise (a denoising AAE): both encoder passes of the step see x + noise, the same
    noisy batch, and the reconstruction loss compares the decoding with the clean x."""
    model = tiny_model(hidden=32, disc_hidden=32).train()
    optimizers = make_optimizers(model, tiny_train())
    x = small_mnist.train_x[:50]
    seen, targets = [], []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    reconstruction_loss = losses.reconstruction_loss
    monkeypatch.setattr(losses, "reconstruction_loss",
                        lambda logits, target: targets.append(target) or reconstruction_loss(logits, target))  # fmt: skip
    train_step(model, optimizers, x, ctx={"input_noise": 0.3})
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert (seen[0] - x).std().item() == pytest.approx(0.3, rel=0.05)
    assert len(targets) == 1 and targets[0] is x
    seen.clear()
    train_step(model, optimizers, x, ctx={"input_noise": 0.0})
    assert all(torch.equal(s, x) for s in seen)


def test_code_noise_makes_a_gaussian_posterior_for_decoder_and_discriminator(small_mnist):
    """--code-noise s: the decoder and the discriminator get z = encoder(x) + N(0, s^2) noise."""
    model = tiny_model(hidden=32, disc_hidden=32).train()
    optimizers = make_optimizers(model, tiny_train())
    codes, decoded, judged = [], [], []
    model.encoder.register_forward_hook(lambda m, args, out: codes.append(out.detach().clone()))
    model.decoder.register_forward_hook(lambda m, args, out: decoded.append(args[0].detach().clone()))
    model.latent_discriminator.register_forward_hook(lambda m, args, out: judged.append(args[0].detach()))
    train_step(model, optimizers, small_mnist.train_x[:200], ctx={"code_noise": 2.0})
    assert len(codes) == 2 and len(decoded) == 1
    assert (decoded[0] - codes[0]).std().item() == pytest.approx(2.0, rel=0.05)
    fakes = [j for j in judged if len(j) == 200 and not torch.equal(j, codes[1])]  # prior samples aside
    assert any((f - codes[1]).std().item() == pytest.approx(2.0, rel=0.05) for f in fakes)


def test_optimizers_cover_their_phases():
    model = tiny_model()
    opts = make_optimizers(model, tiny_train(lr_recon=1e-3, lr_reg=2e-4, beta1_reg=0.5))
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    params = lambda *mods: {id(p) for m in mods for p in m.parameters()}  # noqa: E731
    assert ids(opts["recon"]) == params(model.encoder, model.decoder)
    assert ids(opts["disc"]) == params(model.latent_discriminator)
    assert ids(opts["gen"]) == params(model.encoder)
    assert opts["recon"].param_groups[0]["lr"] == 1e-3
    assert opts["disc"].param_groups[0]["betas"] == (0.5, 0.999)
    assert opts["gen"].param_groups[0]["lr"] == 2e-4


# ----------------------------------------------------------------------------------------------
# Adversarial behaviour


def _disc_accuracy(model, x):
    """(fraction of prior samples called real, fraction of codes called fake)."""
    model.eval()
    with torch.no_grad():
        torch.manual_seed(123)
        real, fake = model.latent_discriminator(model.prior.sample(len(x))), model.latent_discriminator(model.encode(x))
    model.train()
    return (real > 0).float().mean().item(), (fake < 0).float().mean().item()


def _set_lr(opt, lr):
    for group in opt.param_groups:
        group["lr"] = lr


def test_discriminator_learns_and_generator_fools_it(small_mnist):
    model = tiny_model(hidden=64, disc_hidden=64)
    opts = make_optimizers(model, tiny_train(lr_reg=1e-3))
    test_x = small_mnist.test_x
    before = sum(_disc_accuracy(model, test_x)) / 2
    # Phase A: the generator frozen, the discriminator learns to tell codes from prior samples.
    _set_lr(opts["gen"], 0.0)
    torch.manual_seed(0)
    for _ in range(3):
        for xb in small_mnist.train_x.split(50):
            train_step(model, opts, xb)
    real, fake = _disc_accuracy(model, test_x)
    assert (real + fake) / 2 > 0.75 > before
    # Phase B: the discriminator (and reconstruction) frozen, the generator phase alone moves
    # the codes until the discriminator calls most of them real.
    _set_lr(opts["gen"], 1e-3), _set_lr(opts["disc"], 0.0), _set_lr(opts["recon"], 0.0)
    for xb in small_mnist.train_x.split(50):
        train_step(model, opts, xb)
    real_after, fake_after = _disc_accuracy(model, test_x)
    assert real_after == real  # the discriminator did not change
    assert fake_after < fake - 0.5


def test_the_labeled_batches_follow_the_global_step_across_epochs(monkeypatch):
    """The loop draws each epoch's labeled batches ahead (`step_inputs`): step s of the run,
    whatever its epoch, trains on the labeled batch `cycled_batch(..., s)`, so that the labeled
    images are cycled through, not restarted at each epoch."""
    from torch_aae import semi_supervised as semi
    from torch_aae.config import DataConfig, ModelConfig
    from torch_aae.data import cycled_batch

    seen = []  # (step, the labeled batch's indices)
    original = semi.train_step

    def spy(model, opt, x, y, ctx, step):
        seen.append((step, ctx["labeled_idx"].clone()))
        return original(model, opt, x, y, ctx, step)

    monkeypatch.setattr(semi, "train_step", spy)
    torch.manual_seed(0)
    model = semi.SemiSupervisedAAE(16, (4, 4), 3, z_dim=2, hidden=8, disc_hidden=8, dropout=0.0)
    config = Config("semi-supervised", DataConfig(labels="30"), ModelConfig(z_dim=2),
                    tiny_train(epochs=2, batch_size=20, seed=4))  # fmt: skip
    fit(model, synthetic_dataset(60, test=12), config.train, config=config, progress=False)
    assert [step for step, _ in seen] == list(range(6))  # 3 steps an epoch
    for step, idx in seen:
        assert torch.equal(idx, cycled_batch(30, 20, 4, step))
    assert not torch.equal(seen[3][1], seen[0][1])  # step 3 (epoch 2's first) is not step 0's


# ----------------------------------------------------------------------------------------------
# A short training run on real MNIST and its run folder


SUMMARY_KEYS = {"test_recon_bce", "epochs", "train_seconds", "samples_per_second",
                "prior_mean_abs_max", "prior_std_ratio_min", "prior_std_ratio_max"}  # fmt: skip
HISTORY_KEYS = {"epoch", "loss/recon", "loss/disc", "loss/gen", "acc/disc_real", "acc/disc_fake",
                "eval/test_recon_bce", "time/epoch_seconds"}  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(mnist, tmp_path_factory):
    """fit: 500 real images, hidden 64, 3 epochs of 10 steps, into a run folder."""
    data = subset_of(mnist, 500, 500)
    model = tiny_model(hidden=64, disc_hidden=64, dropout=0.2)
    run = tmp_path_factory.mktemp("fit") / "run"
    summary = fit(model, data, tiny_train(epochs=3, batch_size=50), out=run, progress=False)
    return run, summary, model


def test_fit_lowers_the_reconstruction_loss(trained_run):
    run, summary, _ = trained_run
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["loss/recon"] < history[0]["loss/recon"] - 0.05
    assert history[-1]["eval/test_recon_bce"] < history[0]["eval/test_recon_bce"] - 0.05
    assert summary["test_recon_bce"] == pytest.approx(history[-1]["eval/test_recon_bce"], rel=1e-5)


def test_fit_summary(trained_run, mnist):
    run, summary, model = trained_run
    assert SUMMARY_KEYS <= set(summary)
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["epochs"] == 3
    assert summary["train_seconds"] > 0
    assert summary["samples_per_second"] == pytest.approx(1500 / summary["train_seconds"], rel=0.02)
    assert 0 < summary["test_recon_bce"] < 0.7
    assert 0 <= summary["prior_std_ratio_min"] <= summary["prior_std_ratio_max"]
    assert all(math.isfinite(v) for v in summary.values())
    # The codes' match to the prior is that of the trained model's test codes, against std 5.
    model.eval()
    with torch.no_grad():
        codes = model.encode(subset_of(mnist, 500, 500).test_x).numpy()
    expected = metrics.prior_match(codes, 5.0)
    assert {k: summary[k] for k in expected} == pytest.approx(expected, rel=1e-5)


def test_fit_metrics_jsonl(trained_run):
    run, _, _ = trained_run
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    rows = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) == HISTORY_KEYS
        assert all(math.isfinite(v) for v in row.values())


def test_fit_config_json(trained_run):
    run, _, model = trained_run
    cfg = from_dict(json.loads((run / "config.json").read_text()))
    assert isinstance(cfg, Config) and cfg.model_kind == "unsupervised"
    assert (cfg.model.z_dim, cfg.model.hidden, cfg.model.disc_hidden, cfg.model.dropout) == (2, 64, 64, 0.2)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.device) == (3, 50, "cpu")
    assert cfg.data.dataset == "mnist"


def test_fit_checkpoint(trained_run):
    run, _, model = trained_run
    ckpt = load_checkpoint(run / CHECKPOINT)
    assert ckpt["model_kind"] == "unsupervised" and ckpt["model_args"] == model.model_args
    assert ckpt["state"]["epoch"] == 3 and ckpt["state"]["step"] == 30 and ckpt["state"]["batch"] == 0
    assert set(ckpt["optimizers"]) == {"recon", "disc", "gen"}
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt["networks"][name], value), name
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert meta["epoch"] == 3 and meta["step"] == 30 and meta["model_args"] == model.model_args
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["latent.png", "samples.png", "manifold.png", "losses.png"])
def test_fit_plots(trained_run, name):
    run, _, _ = trained_run
    path = run / "plots" / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 2000


def test_fit_without_run_folder_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = synthetic_dataset(40, shape=(4, 4), test=10)
    summary = fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=20), progress=False)
    assert summary["epochs"] == 1 and "test_recon_bce" in summary
    assert list(tmp_path.iterdir()) == []


def test_fit_on_npz_like_data_without_test_split_uses_train(tmp_path):
    data = synthetic_dataset(40, shape=(4, 4))
    summary = fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=20),
                  out=tmp_path / "run", progress=False)  # fmt: skip
    assert "train_recon_bce" in summary and "test_recon_bce" not in summary
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert "eval/train_recon_bce" in row


def test_diverged_training_is_an_error(tmp_path, monkeypatch):
    original = unsupervised.train_step

    def nan_step(*args, **kwargs):
        logs = original(*args, **kwargs)
        logs["loss/gen"] = torch.tensor(float("nan"))
        return logs

    monkeypatch.setattr(unsupervised, "train_step", nan_step)
    data = synthetic_dataset(40, shape=(4, 4))
    with pytest.raises(AAEError, match="training diverged: loss/gen became nan"):
        fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=20),
            out=tmp_path / "run", progress=False)  # fmt: skip
    assert not (tmp_path / "run" / CHECKPOINT).exists()  # no checkpoint of a diverged epoch


def test_every_epoch_trains_in_train_mode(monkeypatch):
    modes = []
    original = unsupervised.train_step

    def recording_step(model, *args, **kwargs):
        modes.append(model.training)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(unsupervised, "train_step", recording_step)
    data = synthetic_dataset(40, shape=(4, 4))
    model = tiny_model(in_dim=16, image_shape=(4, 4), dropout=0.2)
    fit(model, data, tiny_train(epochs=3, batch_size=20), progress=False)
    assert len(modes) == 6
    assert all(modes), modes


def test_the_progress_bar_shows_the_epochs_mean_losses_every_log_every_steps(monkeypatch):
    # --log-every 3, 4 steps per epoch: the bar's losses are refreshed at global steps 3 and 6
    # (batch 3 of epoch 1, batch 2 of epoch 2), each the mean over its epoch's batches so far.
    from tqdm.auto import tqdm

    from torch_aae import train as train_module

    recon, shown = [], []

    class RecordingBar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append((len(recon), dict(ordered_dict)))
            return super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    original = unsupervised.train_step

    def recording_step(*args, **kwargs):
        logs = original(*args, **kwargs)
        recon.append(float(logs["loss/recon"]))
        return logs

    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    monkeypatch.setattr(unsupervised, "train_step", recording_step)
    data = synthetic_dataset(80, shape=(4, 4))
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(epochs=2, batch_size=20, log_every=3),
        progress=False)  # fmt: skip
    assert [steps for steps, _ in shown] == [3, 6] and len(recon) == 8
    assert shown[0][1]["loss/recon"] == pytest.approx(np.mean(recon[0:3]), rel=1e-5)
    assert shown[1][1]["loss/recon"] == pytest.approx(np.mean(recon[4:6]), rel=1e-5)


def test_fit_with_one_dimensional_codes_writes_plots(tmp_path):
    data = synthetic_dataset(40, shape=(4, 4), test=10)
    fit(tiny_model(in_dim=16, image_shape=(4, 4), z_dim=1), data, tiny_train(batch_size=20),
        out=tmp_path / "run", progress=False)  # fmt: skip
    assert (tmp_path / "run" / "plots" / "latent.png").is_file()


def test_fit_on_flat_npz_writes_plots(tmp_path):
    from torch_aae.data import load_npz

    np.savez(tmp_path / "flat.npz", x=np.random.default_rng(0).random((40, 12)))
    data = load_npz(tmp_path / "flat.npz")
    assert data.image_shape == (12,)
    fit(tiny_model(in_dim=12, image_shape=data.image_shape), data, tiny_train(batch_size=20),
        out=tmp_path / "run", progress=False)  # fmt: skip
    assert (tmp_path / "run" / "plots" / "samples.png").is_file()


def test_epoch_seconds_add_up_to_the_training_time_with_intra_epoch_checkpoints(tmp_path):
    from conftest import synthetic_dataset

    data = synthetic_dataset(120, shape=(4, 4))
    model = tiny_model(in_dim=16, image_shape=(4, 4))
    summary = fit(model, data, tiny_train(epochs=2, batch_size=10, checkpoint_every=3),
                  out=tmp_path / "run", progress=False)  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    total = sum(r["time/epoch_seconds"] for r in rows)
    assert total == pytest.approx(summary["train_seconds"], abs=0.01)


def test_lr_step_divides_every_learning_rate_by_ten_from_that_epoch():
    from torch_aae.train import set_learning_rates

    model = tiny_model()
    optimizers = make_optimizers(model, tiny_train(lr_recon=1e-3, lr_reg=2e-4))
    rates = lambda: [g["lr"] for o in optimizers.values() for g in o.param_groups]  # noqa: E731
    set_learning_rates(optimizers, epoch=1, lr_step=2)
    assert rates() == [1e-3, 2e-4, 2e-4]
    set_learning_rates(optimizers, epoch=2, lr_step=2)
    assert rates() == pytest.approx([1e-4, 2e-5, 2e-5])
    set_learning_rates(optimizers, epoch=3, lr_step=0)  # no schedule: the initial rates
    assert rates() == [1e-3, 2e-4, 2e-4]


def test_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original, calls = unsupervised.train_step, []

    def nan_in_epoch_two(*args, **kwargs):
        logs = original(*args, **kwargs)
        calls.append(1)
        if len(calls) > 2:  # 2 steps per epoch: epoch 2 diverges
            logs["loss/recon"] = torch.tensor(float("inf"))
        return logs

    monkeypatch.setattr(unsupervised, "train_step", nan_in_epoch_two)
    data = synthetic_dataset(40, shape=(4, 4))
    run = tmp_path / "run"
    with pytest.raises(AAEError, match=r"loss/recon became inf \(phase 'recon'\)"):
        fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(batch_size=20, epochs=3),
            out=run, progress=False)  # fmt: skip
    meta = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"]) == (1, 2)  # the end of epoch 1, the last good state
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_bf16_and_fp16_autocast_train_like_fp32(mnist):
    # The same 3 epochs in fp32, under bf16 autocast, and under fp16 autocast with loss scaling:
    # weights stay fp32, each reduced precision lowers the loss as much (within 0.02 BCE), and
    # its weights differ from fp32's (autocast really was on).
    data = subset_of(mnist, 500, 500)
    runs = {}
    for precision in ("fp32", "bf16", "fp16"):
        model = tiny_model(hidden=64, disc_hidden=64, dropout=0.0)
        fit(model, data, tiny_train(epochs=3, batch_size=50, precision=precision), progress=False)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[precision] = (metrics.recon_bce(model, data.test_x, "cpu"), model)
    w32 = runs["fp32"][1].encoder.net[0].weight
    for precision in ("bf16", "fp16"):
        assert runs[precision][0] == pytest.approx(runs["fp32"][0], abs=0.02), precision
        assert not torch.equal(w32, runs[precision][1].encoder.net[0].weight), precision


def test_fp16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale():
    """Under fp16 each phase's loss is scaled before its backward pass. With a scale so large
    that the float16 gradients overflow, every phase's update is skipped (weights unchanged)
    and the scale is halved once for the step; at the usual scale, the step updates."""
    from torch_aae import optim
    from torch_aae.train import autocast

    x = torch.rand(20, 784)
    model = tiny_model()
    opt = make_optimizers(model, tiny_train())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    with autocast("cpu", "fp16"), optim.loss_scaling(scaler):
        logs = train_step(model, opt, x, None, None, 0)
    assert all(torch.isfinite(v) for v in logs.values())  # the losses themselves are finite
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scaler.get_scale() == 2.0**59
    scaler = optim.grad_scaler("fp16", "cpu")
    with autocast("cpu", "fp16"), optim.loss_scaling(scaler):
        train_step(model, opt, x, None, None, 1)
    assert scaler.get_scale() == 2.0**16
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed)
    assert any(k.startswith("latent_discriminator.") for k in changed)
    assert optim.grad_scaler("bf16", "cpu") is None and optim.grad_scaler("fp32", "cpu") is None


def test_fp16_resume_continues_from_the_saved_loss_scale(tmp_path):
    run = tmp_path / "run"
    data = synthetic_dataset(n=100, shape=(4, 4))
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(epochs=1, precision="fp16"),
        out=run, progress=False)  # fmt: skip
    ckpt = load_checkpoint(run / CHECKPOINT)
    assert ckpt["grad_scaler"]["scale"] > 0
    ckpt["grad_scaler"]["scale"] = 1024.0  # as if overflows had lowered it
    torch.save(ckpt, run / CHECKPOINT)
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(epochs=2, precision="fp16"),
        out=run, resume=True, progress=False)  # fmt: skip
    assert load_checkpoint(run / CHECKPOINT)["grad_scaler"]["scale"] == 1024.0  # 2 clean steps
    fit(tiny_model(in_dim=16, image_shape=(4, 4)), data, tiny_train(epochs=1), out=tmp_path / "b",
        progress=False)  # fmt: skip
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["grad_scaler"] is None


def test_fp16_is_refused_with_cuda_graphs():
    from torch_aae import graphs
    from torch_aae.config import TrainConfig

    with pytest.raises(AAEError, match="--cuda-graphs does not capture fp16"):
        graphs.check("semi-supervised", torch.device("cuda"), TrainConfig(precision="fp16"))


def test_bf16_phases_see_the_weights_that_earlier_phases_updated():
    """A step's autocast region spans its optimizer updates: a phase after an update must use
    the updated weights, not a bf16 copy cached before it (autocast's cache, off here)."""
    from torch_aae.train import autocast

    layer, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    with autocast("cpu", "bf16"):
        before = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)  # an optimizer step, in place
        after = layer(x)
    with autocast("cpu", "bf16"):
        fresh = layer(x)
    assert before.dtype == torch.bfloat16
    assert torch.equal(after, fresh) and not torch.equal(after, before)


def test_tf32_is_a_cuda_mode(tmp_path):
    from torch_aae.train import autocast

    before = torch.backends.cuda.matmul.allow_tf32
    with autocast("cuda", "tf32"):  # only a flag of the CUDA matmuls: settable without a GPU
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(AAEError, match="tf32 is a CUDA mode"):
        fit(tiny_model(in_dim=16, image_shape=(4, 4)), synthetic_dataset(), tiny_train(precision="tf32"), out=tmp_path / "run",
            progress=False)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_unknown_precision_is_refused():
    with pytest.raises(AAEError, match="--precision 'fp8': choose fp32, bf16, fp16, tf32"):
        tiny_train(precision="fp8")


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_units_with_probability_1_minus_p_and_scales_them(p):
    from torch_aae.networks import Dropout

    drop = Dropout(p)
    torch.manual_seed(0)
    x = torch.ones(400, 1000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    for offset in range(4):  # each of the four units a random word serves
        assert kept.view(-1)[offset::4].float().mean().item() == pytest.approx(1 - p, abs=0.005)
    assert torch.allclose(y[kept], torch.tensor(1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient = mask / (1 - p)
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(Dropout(0.0)(x), x)


def test_dropout_masks_are_seeded():
    from torch_aae.networks import Dropout

    x = torch.ones(3, 50)
    torch.manual_seed(1)
    a = Dropout(0.3)(x)
    torch.manual_seed(1)
    assert torch.equal(a, Dropout(0.3)(x))
    with pytest.raises(AAEError, match=r"dropout probability must be in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(AAEError, match=r"layer widths \[784, 0, 0, 2\]: each must be a positive integer"):
        tiny_model(hidden=0)


def test_sgd_optimizer_takes_the_papers_momenta():
    from torch_aae.config import TrainConfig

    model = tiny_model()
    opt = make_optimizers(model, TrainConfig(optimizer="sgd", lr_recon=0.01, lr_reg=0.1, beta1_reg=0.1))
    assert all(isinstance(o, torch.optim.SGD) for o in opt.values())
    assert opt["recon"].param_groups[0]["momentum"] == 0.9 and opt["recon"].param_groups[0]["lr"] == 0.01
    assert opt["disc"].param_groups[0]["momentum"] == 0.1 and opt["gen"].param_groups[0]["lr"] == 0.1
    with pytest.raises(AAEError, match="--optimizer 'rmsprop': choose adam or sgd"):
        TrainConfig(optimizer="rmsprop")


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_networks_train_like_eager_ones(mnist, tmp_path):
    data = subset_of(mnist, 200, 100)
    runs, graphs = {}, {}
    for mode in ("off", "default"):
        model = tiny_model(hidden=32, disc_hidden=32, dropout=0.0)
        # A fresh Dynamo (no cached code from an earlier compile), so that its count of graphs
        # is this run's: equal weights alone would also pass if compilation were skipped.
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        fit(model, data, tiny_train(epochs=1, batch_size=50, compile=mode), out=tmp_path / mode, progress=False)
        runs[mode], graphs[mode] = model, torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs["off"] == 0 and graphs["default"] > 0, graphs
    assert all(n._compiled_call_impl is not None for n in runs["default"].children())  # each network
    for (name, a), b in zip(runs["off"].state_dict().items(), runs["default"].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)  # same names, same training
    with pytest.raises(AAEError, match="--compile 'fast': choose off, default"):
        tiny_train(compile="fast")
