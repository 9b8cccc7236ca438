"""The supervised AAE (style and content) and its metrics: conditional accuracy, stroke features,
style consistency; label requests through the real CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PNG_MAGIC, assert_one_line_error, run_cli, subset_of, tiny_train
from torch_aae import cli
from torch_aae.classifier import classifier_path, save_classifier, train_classifier
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.data import cycled_batch, labeled_indices
from torch_aae.errors import AAEError
from torch_aae.metrics import conditional_accuracy, stroke_features, style_consistency
from torch_aae.supervised import SupervisedAAE, recon_bce, setup, train_step
from torch_aae.train import fit
from torch_aae.unsupervised import make_optimizers

TINY = dict(z_dim=2, hidden=32, depth=2, disc_hidden=32, disc_depth=2, dropout=0.0)
TINY_FLAGS = ("--hidden", "32", "--disc-hidden", "32", "--no-progress")


def tiny_supervised(seed: int = 0) -> SupervisedAAE:
    torch.manual_seed(seed)
    return SupervisedAAE(784, (28, 28), 10, **TINY)


def config(labels: str | None, **train) -> Config:
    return Config("supervised", DataConfig(labels=labels), ModelConfig(**TINY), tiny_train(**train))


def decoded_with_own_labels(model: SupervisedAAE, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reconstruction logits of x (n, 784) written out here: the decoder reads one-hot(y_i) next
    to the code of image i, row by row (independent of the model's own decode helpers)."""
    return model.decoder(torch.cat([F.one_hot(y, 10).float(), model.encoder(x)], 1))


@torch.no_grad()
def recomputed_summary(model: SupervisedAAE, data) -> dict[str, float]:
    """The supervised summary's metrics recomputed from `model` on `data`'s test split, with the
    cached evaluation classifier: the test BCE (each image decoded with its own label), the
    conditional accuracy (each code decoded with labels 0..9, classified), the classifier's
    accuracy on the real images, and the codes' smallest std / prior std."""
    from torch_aae.classifier import cached_classifier

    model.eval()
    x, y = data.test_x, data.test_y
    classifier = cached_classifier(data)
    z = model.encoder(x)  # (n, 2)
    every = torch.arange(10).repeat(len(x))  # (n * 10,): labels 0..9 for each code
    grid = torch.sigmoid(model.decoder(torch.cat([F.one_hot(every, 10).float(), z.repeat_interleave(10, 0)], 1)))
    return {
        "test_recon_bce": F.binary_cross_entropy_with_logits(decoded_with_own_labels(model, x, y), x).item(),
        "conditional_accuracy": (classifier(grid).argmax(1) == every).double().mean().item(),
        "classifier_accuracy": (classifier(x).argmax(1) == y).double().mean().item(),
        "prior_std_ratio_min": (z.double().std(0, unbiased=False) / model.prior.std).min().item(),
    }


def assert_summary_matches_the_model(summary: dict, model: SupervisedAAE, data) -> None:
    expected = recomputed_summary(model, data)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.fixture(scope="module")
def data(mnist):
    """500 real training images, 200 real test images."""
    return subset_of(mnist, 500, 200)


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory):
    """A classifier cache holding a tiny evaluation classifier for `data`'s test split."""
    folder = tmp_path_factory.mktemp("cache")
    clf = train_classifier(data, epochs=1, batch_size=20, lr=3e-3, progress=False,
                           channels=(4, 8), hidden=16)  # fmt: skip
    save_classifier(clf, classifier_path(data, folder), {"test_accuracy": 0.0})
    return folder


@pytest.fixture(autouse=True)
def use_cache(cache, monkeypatch):
    monkeypatch.setenv("TORCH_AAE_CACHE", str(cache))


@pytest.fixture(scope="module")
def npz(data, tmp_path_factory):
    """`data` as a .npz file (the same test split, so the cached classifier is found)."""
    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    np.savez(path, x=data.train_x.view(-1, 28, 28).numpy(), y=data.train_y.numpy(),
             x_test=data.test_x.view(-1, 28, 28).numpy(), y_test=data.test_y.numpy())  # fmt: skip
    return path


# ----------------------------------------------------------------------------------------------
# The model and its step


def test_the_decoder_takes_the_label_and_the_code(data):
    model = tiny_supervised().eval()
    z = model.encode(data.test_x[:4])
    assert z.shape == (4, 2)
    with torch.no_grad():
        as_3, as_7 = model.decode(torch.full((4,), 3), z), model.decode(torch.full((4,), 7), z)
    assert as_3.shape == (4, 784) and 0 < as_3.min() and as_3.max() < 1
    assert not torch.allclose(as_3, as_7)  # the label changes the image
    assert model.sample(20).shape == (20, 784)
    torch.manual_seed(0)
    from_list = model.sample(3, labels=[3, 3, 7])
    torch.manual_seed(0)  # a list and int32 labels decode as int64 ones do
    assert torch.equal(from_list, model.sample(3, labels=torch.tensor([3, 3, 7], dtype=torch.int32)))


@pytest.mark.parametrize("labels, fragment", [
    (torch.tensor([1, 2]), r"3 samples but labels of shape \(2,\)"),
    ([0, 1, 12], r"labels must be in 0\.\.9"),
    ([-1, 1, 2], r"labels must be in 0\.\.9"),
    ([0.0, 1.0, 2.0], "labels: torch.float32; expected integers"),
    ([[0, 1, 2]], r"3 samples but labels of shape \(1, 3\)"),
])  # fmt: skip
@pytest.mark.parametrize("kind", ["supervised", "semi-supervised"])
def test_sample_refuses_labels_it_cannot_decode(kind, labels, fragment):
    from torch_aae import SemiSupervisedAAE

    model = tiny_supervised() if kind == "supervised" else SemiSupervisedAAE(hidden=16, disc_hidden=16)
    with pytest.raises(AAEError, match=fragment):
        model.sample(3, labels=labels)


def test_setup_draws_balanced_labels_and_saves_their_indices(data, tmp_path):
    ctx = setup(tiny_supervised(), data, config("50", seed=3), "cpu", tmp_path)
    assert ctx["y"].bincount(minlength=10).tolist() == [5] * 10
    saved = ctx["run_files"]["labeled_indices.json"]  # fit writes it into the run folder
    assert saved == labeled_indices(data, "50", 3).tolist() and saved == sorted(saved)
    assert torch.equal(ctx["x"], data.train_x[saved])
    # No --labels on a training set of <= 10,000 images: every image, through the loop's batches.
    assert setup(tiny_supervised(), data, config(None), "cpu", None)["x"] is None


def test_cycled_batches_are_a_pure_function_of_seed_and_step():
    first_pass = torch.cat([cycled_batch(50, 10, 0, s) for s in range(5)])
    assert torch.equal(first_pass.sort().values, torch.arange(50))  # each index once per pass
    assert torch.equal(cycled_batch(50, 10, 0, 7), cycled_batch(50, 10, 0, 7))
    second_pass = torch.cat([cycled_batch(50, 10, 0, s) for s in range(5, 10)])
    assert not torch.equal(first_pass, second_pass)
    assert not torch.equal(cycled_batch(50, 10, 0, 0), cycled_batch(50, 10, 1, 0))


def test_train_step_uses_only_the_labeled_images(data):
    model = tiny_supervised()
    ctx = setup(model, data, config("50"), "cpu", None)
    opt = make_optimizers(model, tiny_train())
    unlabeled = torch.full((50, 784), float("nan"))  # the loop's batch: must not be used
    for step in range(3):
        logs = train_step(model, opt, unlabeled, None, ctx, step)
    assert all(torch.isfinite(v) for v in logs.values()), logs
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("drawn_ahead", [False, True])
def test_the_decoder_reads_each_labeled_images_own_label_and_code(data, drawn_ahead):
    # p(x | y, z): row i of the decoder's input must be one-hot(label of image i) next to the code
    # of image i. A label of another image of the batch (a shifted y) still trains and logs
    # finite losses, but teaches the decoder wrong (y, z) pairs. Both ways the batch is chosen:
    # drawn by the step (`cycled_batch`) and handed in by the loop (`step_inputs`).
    model = tiny_supervised()
    ctx = setup(model, data, config("50", batch_size=10), "cpu", None)
    opt = make_optimizers(model, tiny_train())
    step = 3
    idx = cycled_batch(50, 10, 0, step)
    if drawn_ahead:
        idx = torch.randperm(50, generator=torch.Generator().manual_seed(1))[:10]
        ctx["labeled_idx"] = idx
    encoded, codes, decoded = [], [], []
    model.encoder.register_forward_hook(lambda m, args, out: encoded.append(args[0].clone())
                                        or codes.append(out.detach().clone()))  # fmt: skip
    model.decoder.register_forward_hook(lambda m, args, out: decoded.append(args[0].detach().clone()))
    train_step(model, opt, torch.full((10, 784), float("nan")), None, ctx, step)
    labels = ctx["y"][idx]
    assert labels.unique().numel() > 1  # the batch mixes classes: a shifted label would differ
    assert torch.equal(encoded[0], ctx["x"][idx]) and len(decoded) == 1
    assert torch.equal(decoded[0][:, :10], F.one_hot(labels, 10).float())
    assert torch.equal(decoded[0][:, 10:], codes[0])  # the reconstruction phase's codes, same rows


def test_recon_bce_decodes_each_image_with_its_own_label(data):
    # The evaluation's BCE is that of each test image decoded from its own code with its own
    # label, in batches (here 4: 8, 8, 8 and a short 6) that must not misalign images and labels.
    model = tiny_supervised()
    # A stand-in decoder that draws the mean training image of its label (plus a little of the
    # code): a wrong label costs a clearly higher BCE, which an untrained decoder would not show.
    means = torch.stack([data.train_x[data.train_y == k].mean(0) for k in range(10)]).clamp(0.05, 0.95)
    model.decoder = torch.nn.Linear(12, 784)
    with torch.no_grad():
        model.decoder.weight.copy_(torch.cat([means.logit().T, 0.1 * torch.randn(784, 2)], 1))
        model.decoder.bias.zero_()
    x, y = data.test_x[:30], data.test_y[:30]
    got = recon_bce(model, x, y, "cpu", batch_size=8)
    model.eval()
    with torch.no_grad():
        expected = F.binary_cross_entropy_with_logits(decoded_with_own_labels(model, x, y), x).item()
        shifted = F.binary_cross_entropy_with_logits(decoded_with_own_labels(model, x, y.roll(1)), x).item()
    assert shifted > 1.1 * expected  # the check below can tell the two apart
    assert got == pytest.approx(expected, rel=1e-5)


def test_resume_is_exact_and_training_lowers_the_loss(data, tmp_path):
    cfg = config("100", epochs=2, batch_size=20, code_noise=0.3)  # the noise draws resume too
    straight = tiny_supervised()
    summary = fit(straight, data, cfg.train, out=tmp_path / "a", config=cfg, progress=False)
    # The summary is the trained model's: its metrics recomputed here from the model agree.
    assert_summary_matches_the_model(summary, straight, data)
    assert -1 <= summary["style_consistency"] <= 1
    history = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").open()]
    assert history[1]["loss/recon"] < history[0]["loss/recon"]
    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    fit(tiny_supervised(), data, one.train, out=tmp_path / "b", config=one, progress=False)
    resumed = tiny_supervised()
    fit(resumed, data, cfg.train, out=tmp_path / "b", resume=True, config=cfg, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for png in ("style_grid", "class_samples", "samples", "latent"):
        assert (tmp_path / "a" / "plots" / f"{png}.png").read_bytes()[:8] == PNG_MAGIC


def test_a_run_without_the_evaluation_classifier_stops_before_training(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_AAE_CACHE", str(tmp_path / "empty"))
    cfg = config("100")
    with pytest.raises(AAEError, match="aae classifier train"):
        fit(tiny_supervised(), data, cfg.train, out=tmp_path / "run", config=cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----------------------------------------------------------------------------------------------
# Metrics: known answers


class _ReadsTheLabel(torch.nn.Module):
    """A stand-in evaluation classifier: its logits are an image's first 10 pixels."""

    def forward(self, x):
        return x[:, :10]


def test_every_code_is_decoded_with_every_label_in_order(monkeypatch):
    from torch_aae.supervised import decode_every_label, score_grid

    model = tiny_supervised()
    # Each decoded image shows its label in its first 10 pixels and its code after them.
    monkeypatch.setattr(model, "decode", lambda y, z: torch.cat([F.one_hot(y, 10).float(), z.sigmoid(),
                                                                 torch.zeros(len(y), 772)], 1))  # fmt: skip
    codes = torch.randn(7, 2)
    images = decode_every_label(model, codes, "cpu")  # (7, 10, 784)
    assert images.shape == (7, 10, 784)
    assert torch.equal(images[..., :10].argmax(-1), torch.arange(10).repeat(7, 1))
    torch.testing.assert_close(images[..., 10:12], codes.sigmoid()[:, None].expand(7, 10, 2))
    predicted, style = score_grid(model, _ReadsTheLabel(), codes, "cpu", batch_size=3)
    assert (predicted == np.tile(np.arange(10), (7, 1))).all() and style.shape == (7, 10, 2)
    assert conditional_accuracy(predicted)["conditional_accuracy"] == 1.0


def test_conditional_accuracy_known_answers():
    perfect = np.tile(np.arange(10), (7, 1))  # (7 codes, 10 labels), each called its label
    assert conditional_accuracy(perfect) == {"conditional_accuracy": 1.0}
    constant = np.zeros((7, 10), int)  # always class 0: right once per row
    assert conditional_accuracy(constant)["conditional_accuracy"] == pytest.approx(0.1)
    noise = np.random.default_rng(0).integers(0, 10, (5000, 10))
    assert conditional_accuracy(noise)["conditional_accuracy"] == pytest.approx(0.1, abs=0.01)


def bar(width: int = 2, shear: float = 0.0) -> torch.Tensor:
    """A vertical bar (28, 28), `width` pixels wide, sheared by `shear` (> 0 leans right)."""
    img = torch.zeros(28, 28)
    img[4:24, 14 - width // 2 : 14 - width // 2 + width] = 1
    return styled(img, shear, 0)


def styled(img: torch.Tensor, shear: float, thicken: int) -> torch.Tensor:
    """Shear an image (28, 28) (> 0 leans right) and thicken its strokes `thicken` times."""
    theta = torch.tensor([[[1.0, shear, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(theta, (1, 1, 28, 28), align_corners=False)
    out = F.grid_sample(img[None, None], grid, align_corners=False)
    for _ in range(thicken):
        out = F.max_pool2d(out, 3, stride=1, padding=1)
    return out[0, 0]


def test_stroke_features_known_answers():
    thin, thick, right, left = bar(2), bar(4), bar(2, 0.4), bar(2, -0.4)
    feats = stroke_features(torch.stack([thin, thick, right, left]).numpy())
    assert feats[1, 0] == pytest.approx(2 * feats[0, 0], rel=0.01)  # twice the ink
    assert abs(feats[0, 1]) < 1e-6 and feats[2, 1] > 0.2 and feats[3, 1] < -0.2
    assert feats[2, 1] == pytest.approx(-feats[3, 1], rel=1e-3)


def test_style_consistency_separates_a_consistent_grid_from_a_shuffled_one(mnist):
    # One real digit per class (the columns); each row applies one handwriting style to all of
    # them: a slant and a stroke width. Then the same cells with rows shuffled per column.
    digits = [mnist.test_x[(mnist.test_y == k).nonzero()[0, 0]].view(28, 28) for k in range(10)]
    rng = np.random.default_rng(0)
    rows = [(rng.uniform(-0.4, 0.4), rng.integers(0, 2)) for _ in range(40)]
    grid = np.stack([[styled(d, s, t).numpy() for d in digits] for s, t in rows])  # (40,10,28,28)
    feats = stroke_features(grid.reshape(-1, 28, 28)).reshape(40, 10, 2)
    consistent = style_consistency(feats)
    shuffled = feats.copy()
    for k in range(10):
        shuffled[:, k] = shuffled[rng.permutation(40), k]
    mixed = style_consistency(shuffled)
    assert consistent["style_consistency"] > 0.8, consistent
    assert abs(mixed["style_consistency"]) < 0.2, mixed
    assert set(consistent) == {"style_consistency", "style_consistency_thickness",
                               "style_consistency_slant"}  # fmt: skip
    # A constant column carries no style: it correlates 0 with the others.
    feats[:, 0] = 1.0
    assert style_consistency(feats)["style_consistency"] < consistent["style_consistency"]


def test_style_consistency_is_the_mean_pearson_correlation_over_pairs_of_columns():
    # Known correlations, 4 rows x 3 labels. Thickness: columns a, 2a + 1 and -a, pairs (1, -1,
    # -1): -1/3. Slant: b, c orthogonal to b, and b, pairs (0, 1, 0): 1/3. Their mean: 0.
    a, b, c = np.array([1.0, 2, 3, 4]), np.array([1.0, -1, 1, -1]), np.array([1.0, 1, -1, -1])
    feats = np.stack([np.stack([a, 2 * a + 1, -a], 1), np.stack([b, c, b], 1)], 2)  # (4, 3, 2)
    out = style_consistency(feats)
    assert out["style_consistency_thickness"] == pytest.approx(-1 / 3)
    assert out["style_consistency_slant"] == pytest.approx(1 / 3)
    assert out["style_consistency"] == pytest.approx(0.0, abs=1e-12)
    # A constant column correlates 0 with the others (not NaN): pairs (0, 0, 1).
    feats[:, 0, 0] = 5.0
    assert style_consistency(feats)["style_consistency_thickness"] == pytest.approx(-1 / 3)
    feats[:, 2, 0] = a
    assert style_consistency(feats)["style_consistency_thickness"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------------------
# The CLI


@pytest.mark.parametrize(
    "labels, message",
    [("0", "--labels 0: must be positive"),
     ("600", "--labels 600: only 500 labeled training images exist"),
     ("15", "--labels 15: must be divisible by the 10 classes")],  # fmt: skip
)
def test_bad_label_requests_fail_with_one_line(labels, message, npz, tmp_path):
    proc = run_cli("train", "supervised", "--dataset", npz, "--labels", labels, *TINY_FLAGS,
                   "--out", tmp_path / "run")  # fmt: skip
    assert_one_line_error(proc, message)


def test_the_cli_default_is_10000_labels(npz, tmp_path, capsys):
    argv = ["train", "supervised", "--dataset", str(npz), "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    assert "--labels 10000: only 500 labeled training images" in capsys.readouterr().err


def test_cli_trains_a_supervised_run(npz, data, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "supervised", "--dataset", npz, "--labels", "100", "--epochs", "1",
                   "--batch-size", "50", *TINY_FLAGS, "--out", run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert "style_consistency" in summary
    # The printed summary is that of the run's saved model, recomputed here from its checkpoint.
    from torch_aae.checkpoint import load_model

    assert_summary_matches_the_model(summary, load_model(run), data)
    assert len(json.loads((run / "labeled_indices.json").read_text())) == 100
    assert (run / "plots" / "style_grid.png").read_bytes()[:8] == PNG_MAGIC
