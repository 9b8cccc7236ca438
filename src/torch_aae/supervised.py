"""The supervised adversarial autoencoder: style and content disentangled (Makhzani et al. 2015,
section 5, Fig. 6; the blog's second experiment).

The decoder p(x|y,z) gets the one-hot class y and the code z; the encoder q(z|x) never sees y, so
it only needs to put the *style* (stroke width, slant, size) into z, and the latent discriminator
makes the codes follow the prior. Decoding one z with every y writes the same handwriting in
every digit (the style grid).

Labels: a class-balanced draw of `--labels` training images by `--seed` (default 10,000, the
blog's setting; `--labels all` for every image; from Python, `labels=None` means 10,000, or all
when the training set holds no more than that). Only labeled images are used, in all three phases:
with `all` the loop's batches; otherwise batch `step` of a cycle through the labeled images, a
pure function of (seed, step), so a resumed run continues exactly. An epoch stays one pass's worth
of steps over the training set (len(train) / batch_size), i.e. 60000 / N passes over N labels.

A larger z (8 to 15 dimensions) has room to keep the class too; the decoder, which never sees a
z and a y that disagree, then ignores y. Two settings remove the class from z (measured on MNIST,
z 8, prior std 1; small nets, 1,200 steps on 5,000 labels: conditional accuracy on 1,000 test
images): the base settings 0.22; --code-noise 0.5 alone 0.37; --lr-reg 1e-3 alone 0.95; both
1.00. Use `--z-dim 8 --prior-std 1 --code-noise 0.5 --lr-reg 1e-3`. With `--code-noise s` the
posterior is Gaussian, q(z|x) = N(encoder(x), s^2 I) (the paper's "Gaussian posterior" of
section 2, with a fixed variance): every phase sees a noisy z, which limits what z can carry;
metrics and plots use the noise-free code encoder(x). The blog's 2-D code needs neither.

Evaluation scores generated images with the library's evaluation classifier (classifier.py),
which must be trained first (`aae classifier train`, or `train_and_cache(data)`); every run
checks this before training starts, so it does not fail after hours.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses, optim
from .config import ModelConfig
from .data import cycled_batch, labeled_indices
from .errors import AAEError
from .networks import Decoder, Discriminator, Encoder, gaussian_noise
from .priors import make_prior, sample_labels, sample_on
from .unsupervised import adversarial_phases
from .semi_supervised import step_inputs  # noqa: F401  (the labeled batches, drawn ahead)
from .unsupervised import make_optimizers  # noqa: F401  (the variant's entry: the same three phases)

DEFAULT_LABELS = 10_000  # the blog's number of labeled images
# The CLI's defaults for this model where they differ from the config's: the blog's 10,000 labels
# and the optimiser settings measured with the blog's 2-D code (runs/sup-z2: conditional accuracy
# 0.95 after 7-10 epochs). For a larger z see the module docstring.
CLI_DEFAULTS = {"labels": str(DEFAULT_LABELS), "epochs": 10, "lr_recon": 1e-3, "lr_reg": 2e-4,
                "beta1_reg": 0.5}  # fmt: skip


class SupervisedAAE(nn.Module):
    """Encoder q(z|x), decoder p(x|y,z) on concat(one-hot y, z), latent discriminator, prior.

    Args:
        in_dim: features per image (784 for MNIST).
        image_shape: shape to view one image as, for plots.
        n_classes: number of labels y.
        z_dim, hidden, depth, disc_hidden, disc_depth, dropout: see `ModelConfig`.
        prior: "gaussian", the only prior the style code takes (the argument is kept for the
            saved constructor arguments of earlier checkpoints); prior_std: its std.
    """

    kind = "supervised"

    def __init__(
        self,
        in_dim: int = 784,
        image_shape: tuple[int, ...] = (28, 28),
        n_classes: int = 10,
        z_dim: int = 2,
        hidden: int = 1000,
        depth: int = 2,
        disc_hidden: int = 1000,
        disc_depth: int = 2,
        dropout: float = 0.2,
        prior: str = "gaussian",
        prior_std: float = 5.0,
    ):
        super().__init__()
        self.model_args = dict(
            in_dim=in_dim, image_shape=list(image_shape), n_classes=n_classes, z_dim=z_dim,
            hidden=hidden, depth=depth, disc_hidden=disc_hidden, disc_depth=disc_depth,
            dropout=dropout, prior=prior if isinstance(prior, str) else "custom",
            prior_std=prior_std,
        )  # fmt: skip
        self.image_shape = tuple(image_shape)
        self.n_classes = n_classes
        if not (isinstance(prior, str) and prior == "gaussian"):  # else refused by fit, after the build
            raise AAEError(f"prior={prior!r}: the supervised model's prior is the Gaussian N(0, prior_std²); "
                           "only UnsupervisedAAE takes another")  # fmt: skip
        self.prior = make_prior(prior, z_dim, prior_std)
        self.encoder = Encoder(in_dim, z_dim, [hidden] * depth, dropout)  # q(z|x)
        self.decoder = Decoder(n_classes + z_dim, in_dim, [hidden] * depth)  # p(x|y,z)
        self.latent_discriminator = Discriminator(z_dim, [disc_hidden] * disc_depth)  # D

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape, n_classes: int = 10,
                    prior=None):  # fmt: skip
        return cls(
            in_dim, image_shape, n_classes, cfg.z_dim, cfg.hidden, cfg.depth, cfg.disc_hidden,
            cfg.disc_depth, cfg.dropout, prior if prior is not None else cfg.prior, cfg.prior_std,
        )  # fmt: skip

    @property
    def z_dim(self) -> int:
        return self.model_args["z_dim"]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) -> style codes (batch, z_dim)."""
        return self.encoder(x)

    def decode_logits(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Labels (batch,) int64 and codes (batch, z_dim) -> pixel logits (batch, in_dim)."""
        return self.decoder(torch.cat([F.one_hot(y, self.n_classes).to(z.dtype), z], 1))

    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Labels (batch,) int64 and codes (batch, z_dim) -> pixel probabilities (batch, in_dim)."""
        return torch.sigmoid(self.decode_logits(y, z))

    def reconstruct_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (batch, in_dim) and their labels (batch,) -> reconstruction logits."""
        return self.decode_logits(y, self.encoder(x))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode `n` prior samples with `labels` (n,) (default: 0, 1, ..., K-1, 0, 1, ...)."""
        device = next(self.parameters()).device
        y = torch.arange(n) % self.n_classes if labels is None else sample_labels(labels, n, self.n_classes)
        return self.decode(y.to(device), sample_on(self.prior, n, device))


MODEL = SupervisedAAE  # the variant registry's entry point


def check_evaluable(data) -> None:
    """Before training (`fit`): the evaluation classifier that scores the run at its end exists,
    with a run folder or without, and is this data's, so that a run does not fail after hours."""
    from .classifier import check_cached

    data.check_labeled_splits("supervised")
    check_cached(data)


def setup(model: SupervisedAAE, data, config, device, run_path) -> dict:
    """Draw the labeled images (class-balanced, by seed), have their indices saved to
    RUN/labeled_indices.json.

    Returns:
        ctx: labeled images x (N, in_dim) and labels y (N,) on `device` (None when every training
        image is labeled: the loop's batches are used), batch_size and seed.
    """
    if data.train_y is None:
        raise AAEError(f"{data.name}: the supervised model needs labels, and the dataset has none")
    if data.num_classes != model.n_classes:
        raise AAEError(f"{data.name} has {data.num_classes} classes; the model {model.n_classes}")
    labels = config.data.labels
    if labels is None:
        labels = str(DEFAULT_LABELS) if len(data.train_x) > DEFAULT_LABELS else "all"
    idx = labeled_indices(data, labels, config.data_draw_seed)
    every = len(idx) == len(data.train_x)
    return {
        "run_files": {"labeled_indices.json": idx.tolist()},  # written by fit to the run folder
        "x": None if every else data.train_x[idx].to(device),
        "y": None if every else data.train_y[idx].to(device),
        "batch_size": config.train.batch_size,
        "seed": config.train.seed,
        "code_noise": config.train.code_noise,
    }


def train_step(model: SupervisedAAE, opt: dict, x: torch.Tensor, y=None, ctx=None, step=0):
    """One mini-batch of labeled images through the three phases, in the paper's order.

    Returns:
        Losses and discriminator accuracies as 0-d tensors (no host sync).
    """
    if ctx is not None and ctx["x"] is not None:  # only labeled images: batch `step` of them
        idx = ctx.get("labeled_idx")  # the loop's: computed ahead, per epoch (`step_inputs`)
        if idx is None:
            idx = cycled_batch(len(ctx["x"]), ctx["batch_size"], ctx["seed"], step).to(x.device)
        x, y = ctx["x"][idx], ctx["y"][idx]  # (batch, in_dim), (batch,)
    noise = 0.0 if ctx is None else ctx["code_noise"]
    disc = model.latent_discriminator

    def code(x):  # z ~ q(z|x): the encoder's output, plus N(0, noise^2) for a Gaussian posterior
        return gaussian_noise(model.encoder(x), noise)  # (batch, z_dim)

    # 1. Reconstruction: min BCE(x, p(x | y, z ~ q(z|x))) over encoder + decoder.
    opt["recon"].zero_grad(set_to_none=True)
    recon = losses.reconstruction_loss(model.decode_logits(y, code(x)), x)
    optim.backward_step(recon, opt["recon"])

    # 2-3. Discriminator: prior samples vs. z ~ q(z|x); then generator: the encoder fools the
    # updated discriminator. One encoder pass after the reconstruction update serves both.
    z_fake = code(x)  # (batch, z_dim)
    z_real = sample_on(model.prior, len(x), x.device)  # (batch, z_dim)
    return {"loss/recon": recon.detach(), **adversarial_phases(disc, opt, z_real, z_fake)}


# ----------------------------------------------------------------------------------------------
# Metrics and plots


@torch.no_grad()
def recon_bce(model: SupervisedAAE, x, y, device, batch_size: int = 1000) -> float:
    """Mean per-pixel BCE of the reconstructions of x (n, in_dim) decoded with their labels y."""
    from .metrics import collect

    def batch_total(idx):  # (1,): the batch's mean BCE times its size
        xb, yb = x[idx].to(device), y[idx].to(device)
        return (losses.reconstruction_loss(model.reconstruct_logits(xb, yb), xb) * len(idx))[None]

    model.eval()
    return float(collect(batch_total, torch.arange(len(x)), "cpu", batch_size).sum()) / len(x)


@torch.no_grad()
def decode_every_label(model: SupervisedAAE, codes: torch.Tensor, device) -> torch.Tensor:
    """Codes (n, z_dim) -> images (n, K, in_dim): each code decoded with y = 0..K-1."""
    model.eval()
    k = model.n_classes
    z = codes.to(device).repeat_interleave(k, 0)  # (n * K, z_dim): each code K times
    y = torch.arange(k, device=device).repeat(len(codes))  # (n * K,): 0..K-1 for each code
    return model.decode(y, z).view(len(codes), k, -1)


def score_grid(model: SupervisedAAE, classifier, codes: torch.Tensor, device,
               batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Decode every code with every label; classify and measure the style of each image.

    Returns:
        predicted classes (n, K) and stroke features (n, K, 2), for `conditional_accuracy` and
        `style_consistency`.
    """
    from .classifier import predict
    from .metrics import stroke_features

    predicted, style = [], []
    for zb in codes.split(batch_size):
        images = decode_every_label(model, zb, device)  # (b, K, in_dim)
        b, k, _ = images.shape
        flat = images.view(b * k, -1)
        predicted.append(predict(classifier, flat, device).view(b, k).numpy())
        grey = flat.cpu().numpy().reshape(b * k, *model.image_shape[-2:])
        style.append(stroke_features(grey).reshape(b, k, -1))
    return np.concatenate(predicted), np.concatenate(style)


def epoch_metrics(model: SupervisedAAE, data, device) -> dict[str, float]:
    """Logged after every epoch: the reconstruction BCE on the test set (true labels)."""
    split, x, y = data.eval_split()
    return {f"eval/{split}_recon_bce": recon_bce(model, x, y, device)}


def evaluate(model: SupervisedAAE, data, device) -> dict[str, float]:
    """Final metrics on the test set: test_recon_bce; conditional_accuracy (every test image's z
    decoded with every label, scored by the evaluation classifier); style_consistency (see
    metrics.style_consistency); the classifier's own accuracy on the real test images, for
    reference; and the codes' prior match."""
    from .classifier import cached_classifier, classifier_accuracy
    from .metrics import collect, conditional_accuracy, prior_match, style_consistency

    split, x, y = data.eval_split()
    classifier = cached_classifier(data, device=device)
    model.eval()
    codes = collect(model.encode, x, device)
    predicted, style = score_grid(model, classifier, codes, device)
    out = {f"{split}_recon_bce": recon_bce(model, x, y, device)}
    out.update(conditional_accuracy(predicted))
    out.update(style_consistency(style))
    out["classifier_accuracy"] = classifier_accuracy(classifier, x, y, device)
    if hasattr(model.prior, "std"):
        out.update(prior_match(codes.numpy(), model.prior.std))
    return out


def style_grid(model: SupervisedAAE, x: torch.Tensor, device) -> torch.Tensor:
    """Rows: each image of x (rows, in_dim), then its code decoded with y = 0..K-1.

    Returns:
        (rows * (K + 1), in_dim) images in row order, for `plots.save_image_grid`.
    """
    model.eval()
    with torch.no_grad():
        decoded = decode_every_label(model, model.encode(x.to(device)), device).cpu()
    return torch.cat([x[:, None], decoded], 1).flatten(0, 1)


def make_plots(model: SupervisedAAE, data, folder, device) -> list:
    """The style grid (test images' z with every y), its reverse (rows: one class, columns: z
    from the prior), prior samples and the latent scatter, as PNGs in `folder`."""
    from . import plots
    from .metrics import collect

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device).numpy()
    names = ["latent.png", "style_grid.png", "class_samples.png", "samples.png"]
    written = [folder / name for name in names]
    k, shape = model.n_classes, model.image_shape
    plots.save_latent_scatter(codes, None if y is None else y.numpy(), written[0],
                              f"{split} style codes z (labels should not cluster)")  # fmt: skip
    title = f"style grid: {split} image, then its z with y = 0..{k - 1}"
    plots.save_image_grid(style_grid(model, x[:10], device).numpy(), shape, min(10, len(x)),
                          written[1], title)  # fmt: skip
    torch.manual_seed(0)
    z = model.prior.sample(16).to(device)  # (16, z_dim), the same z down each column
    with torch.no_grad():
        by_class = decode_every_label(model, z, device).transpose(0, 1).flatten(0, 1).cpu()
    plots.save_image_grid(by_class.numpy(), shape, k, written[2],
                          "rows: one class; columns: one z from the prior each")  # fmt: skip
    plots.save_image_grid(model.sample(10 * k).cpu().numpy(), shape, 10, written[3],
                          f"decoded prior samples, column = y 0..{k - 1}")  # fmt: skip
    return written
