"""The semi-supervised adversarial autoencoder (Makhzani et al. 2015, section 5, Fig. 8; Table 2).

The encoder q(y, z | x) has two heads on a shared trunk: a categorical y (10 logits) and a
continuous style code z. The decoder p(x | y, z) reconstructs from softmax(y) and z. Two
discriminators regularize the heads: a categorical one pushes softmax(y) towards one-hot vectors
drawn uniformly, a Gaussian one pushes z towards N(0, std^2 I). A supervised phase trains q(y|x)
on the few labeled images with cross-entropy on the logits. q(y|x)'s argmax is the classifier.

Per mini-batch of training images (the loop's batch; all training images, labeled ones
included, serve as unlabeled data) and of labeled images (cycled through):
1. reconstruction, 2. both discriminators, 3. generator (encoder against both),
4. supervised classification.
"""

from __future__ import annotations

import contextlib


import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .config import ModelConfig, TrainConfig
from .augment import random_affine, random_thickness
from .data import cycled_batch, labeled_indices
from .errors import AAEError
from .networks import Decoder, Discriminator, Dropout, gaussian_noise, mlp, paired_discriminators
from . import optim
from .priors import GaussianPrior, sample_labels

# The CLI's defaults for this model where they differ from ModelConfig's / TrainConfig's.
CLI_DEFAULTS = {"z_dim": 10, "prior_std": 1.0, "labels": "100", "epochs": 100,
                "lr_recon": 1e-3, "lr_reg": 2e-4, "beta1_reg": 0.5}  # fmt: skip


class SplitEncoder(nn.Module):
    """q(y, z | x): shared trunk, then class logits (batch, n_classes) and code z (batch, z_dim)."""

    def __init__(self, in_dim: int, n_classes: int, z_dim: int, hidden: list[int], dropout: float):
        super().__init__()
        self.trunk = nn.Sequential(mlp([in_dim, *hidden]), nn.ReLU(), Dropout(dropout))
        self.class_head = nn.Linear(hidden[-1], n_classes)
        self.style_head = nn.Linear(hidden[-1], z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.class_head(h), self.style_head(h)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits only (the supervised phase and the test error)."""
        return self.class_head(self.trunk(x))


class SemiSupervisedAAE(nn.Module):
    """Encoder q(y,z|x), decoder p(x|y,z), categorical and Gaussian discriminators."""

    kind = "semi-supervised"

    def __init__(
        self,
        in_dim: int = 784,
        image_shape: tuple[int, ...] = (28, 28),
        n_classes: int = 10,
        z_dim: int = 10,
        hidden: int = 1000,
        depth: int = 2,
        disc_hidden: int = 1000,
        disc_depth: int = 2,
        dropout: float = 0.2,
        prior_std: float = 1.0,
    ):
        super().__init__()
        self.model_args = dict(
            in_dim=in_dim, image_shape=list(image_shape), n_classes=n_classes, z_dim=z_dim,
            hidden=hidden, depth=depth, disc_hidden=disc_hidden, disc_depth=disc_depth,
            dropout=dropout, prior_std=prior_std,
        )  # fmt: skip
        self.image_shape = tuple(image_shape)
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise AAEError(f"n_classes {n_classes}: a categorical code needs at least 2 classes")
        self.n_classes = n_classes
        self.prior = GaussianPrior(z_dim, prior_std)
        self.encoder = SplitEncoder(in_dim, n_classes, z_dim, [hidden] * depth, dropout)
        self.decoder = Decoder(n_classes + z_dim, in_dim, [hidden] * depth)
        self.label_discriminator = Discriminator(n_classes, [disc_hidden] * disc_depth)
        self.latent_discriminator = Discriminator(z_dim, [disc_hidden] * disc_depth)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape, n_classes: int = 10):
        return cls(in_dim, image_shape, n_classes, cfg.z_dim, cfg.hidden, cfg.depth,
                   cfg.disc_hidden, cfg.disc_depth, cfg.dropout, cfg.prior_std)  # fmt: skip

    @property
    def z_dim(self) -> int:
        return self.model_args["z_dim"]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The style code z (batch, z_dim)."""
        return self.encoder(x)[1]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes (batch,) from q(y|x)."""
        return self.encoder.classify(x).argmax(1)

    @torch.no_grad()
    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x): (batch, n_classes) probabilities (the clusters, for the clustering models)."""
        return self.encoder.classify(x).softmax(1)

    def decoder_input(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads: (y, z) concatenated, (batch, n_classes + z_dim)."""
        return torch.cat([y, z], 1)

    def recon_penalty(self) -> torch.Tensor | None:
        """An extra term of the reconstruction phase's loss (none here)."""
        return None

    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities or one-hot y (batch, n_classes) and z -> pixel probabilities."""
        return torch.sigmoid(self.decoder(self.decoder_input(y, z)))

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits, z = self.encoder(x)
        return self.decoder(self.decoder_input(logits.softmax(1), z))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode n draws of (one-hot y, z from the prior): y uniform, or `labels` (n,)."""
        device = next(self.parameters()).device
        k = torch.randint(self.n_classes, (n,)) if labels is None else sample_labels(labels, n, self.n_classes)
        y = F.one_hot(k, self.n_classes).float()
        return self.decode(y.to(device), self.prior.sample(n).to(device))


MODEL = SemiSupervisedAAE


def sample_one_hot(n: int, n_classes: int, device) -> torch.Tensor:
    """Draws from the categorical prior: uniform one-hot vectors (n, n_classes). Built by a
    scatter: no check of the drawn values, so no host sync on a GPU, and a CUDA graph can hold it."""
    k = torch.randint(n_classes, (n, 1), device=device)
    return torch.zeros(n, n_classes, device=device).scatter_(1, k, 1.0)


def make_optimizers(model: SemiSupervisedAAE, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per phase; the supervised phase trains the trunk and the class head."""
    enc = model.encoder
    discriminators = [*model.label_discriminator.parameters(), *model.latent_discriminator.parameters()]
    return {
        "recon": optim.make([*enc.parameters(), *model.decoder.parameters()], cfg.lr_recon, cfg),
        "disc": optim.make(discriminators, cfg.lr_reg, cfg, regularization=True),
        "gen": optim.make(enc.parameters(), cfg.lr_reg, cfg, regularization=True),
        "sup": optim.make([*enc.trunk.parameters(), *enc.class_head.parameters()], cfg.lr_sup, cfg),
    }


def check_evaluable(data) -> None:
    """Before training (`fit`): the splits that the semi-supervised model scores have labels."""
    data.check_labeled_splits("semi-supervised")


def setup(model, data, config, device, run_path) -> dict:
    """Draw the labeled images (class-balanced, by the data seed: --data-seed, else --seed); save
    their indices to the run folder."""
    if data.train_y is not None and data.num_classes != model.n_classes:
        raise AAEError(f"{data.name} has {data.num_classes} classes, the model {model.n_classes} "
                       "(its n_classes)")  # fmt: skip
    idx = labeled_indices(data, config.data.labels, config.data_draw_seed)
    return {
        "run_files": {"labeled_indices.json": idx.tolist()},  # written by fit to the run folder
        "x": data.train_x[idx].to(device),  # (n_labeled, in_dim)
        "y": data.train_y[idx].to(device),
        "batch_size": config.train.batch_size,
        "seed": config.train.seed,
        "input_noise": config.train.input_noise,
        "code_noise": config.train.code_noise,
        "cat_noise": config.train.cat_noise,
        # (rotate degrees, zoom, shift pixels, elastic scale) of the labeled images; all 0: left as they are
        "label_augment": (config.train.label_rotate, config.train.label_scale, config.train.label_shift,
                          config.train.label_elastic),
        "label_elastic_sigma": config.train.label_elastic_sigma,
        "view": config.train.view,  # the dim-reduction model's; the semi-supervised model refuses them
        "eval_codes": config.train.adv_eval_codes,
        "paired_discriminators": config.train.paired_discriminators,
        "image_shape": model.image_shape,
    }


def step_inputs(ctx: dict, first_step: int, count: int) -> dict[str, torch.Tensor]:
    """The labeled batches of steps first_step .. first_step + count - 1, drawn ahead:
    {"labeled_idx": (count, labeled batch)}. The loop moves them to the device once per epoch,
    so that no step copies from the host (a host sync on a GPU)."""
    if ctx.get("x") is None:
        return {}
    n = len(ctx["x"])
    rows = [cycled_batch(n, ctx["batch_size"], ctx["seed"], s) for s in range(first_step, first_step + count)]
    return {"labeled_idx": torch.stack(rows)} if rows else {}


def train_step(model: SemiSupervisedAAE, opt: dict, x, y=None, ctx=None, step: int = 0) -> dict:
    """The four phases on one batch of training images (labels unused) and one labeled batch."""
    logs = adversarial_autoencoder_phases(model, opt, x, ctx["input_noise"], ctx["code_noise"],
                                          ctx["cat_noise"], ctx["view"], ctx["eval_codes"],
                                          ctx["paired_discriminators"])  # fmt: skip

    # 4. Supervised: min cross-entropy(q(y|x_labeled), label) on the logits (no double softmax).
    # The labeled set is cycled, one fresh permutation per pass: batch `step` is a pure function
    # of (seed, step), so a resumed run draws the same batches.
    noise = ctx["input_noise"]
    idx = ctx.get("labeled_idx")  # the loop's: computed ahead, per epoch (`step_inputs`)
    if idx is None:
        idx = cycled_batch(len(ctx["x"]), ctx["batch_size"], ctx["seed"], step).to(x.device)
    xl, yl = ctx["x"][idx], ctx["y"][idx]
    if any(ctx["label_augment"]):  # random rotations, zooms, shifts of the few labeled images
        xl = random_affine(xl, ctx["image_shape"], *ctx["label_augment"], ctx["label_elastic_sigma"])
    xl = gaussian_noise(xl, noise)
    opt["sup"].zero_grad(set_to_none=True)
    sup = F.cross_entropy(model.encoder.classify(xl), yl)
    optim.backward_step(sup, opt["sup"])
    logs["loss/sup"] = sup.detach()
    return logs


@contextlib.contextmanager
def dropout_off(module: nn.Module, off: bool = True):
    """Within the block, `module`'s dropout layers are in eval mode (when `off`); gradients flow
    as ever."""
    drops = [m for m in module.modules() if isinstance(m, (Dropout, nn.Dropout)) and m.training] if off else []
    for m in drops:
        m.train(False)
    try:
        yield
    finally:
        for m in drops:
            m.train(True)


def adversarial_autoencoder_phases(model: SemiSupervisedAAE, opt: dict, x, noise: float,
                                   code_noise: float = 0.0, cat_noise: float = 0.0,
                                   view: tuple[float, ...] = (0, 0, 0, 0, 0),
                                   eval_codes: bool = False, paired: bool = False) -> dict:  # fmt: skip
    """Phases 1-3 on a batch of images, no labels: reconstruction, both discriminators, generator.
    Shared by the semi-supervised model and the clustering model (which has no phase 4).

    Args:
        noise: std of Gaussian noise on the encoder's input.
        code_noise: std of Gaussian noise on z, a Gaussian posterior q(z|x) = N(encoder(x), s^2 I):
            it limits what z can carry, so that the class goes through y.
        cat_noise: std of Gaussian noise added to the categorical discriminator's inputs, one-hot
            prior samples and softmax(y) alike ("instance noise"): the discriminator can no
            longer tell an exact vertex from a near one, so what it learns is which classes are
            over- or under-used, and the encoder is not pushed into a saturated softmax.
        view: (rotate degrees, zoom, shift pixels, elastic scale) of `augment.random_affine`, then
            the stroke change of `augment.random_thickness`; not all 0: the reconstruction phase
            decodes x from y of a copy of x so transformed and z of x itself (one encoder pass
            over both), so that y cannot carry what the transformation changes (slant, size,
            position, thickness) and z must. Phases 2 and 3 encode x.
        eval_codes: phases 2 and 3 read the codes of the encoder with its dropout off (the
            blog's discriminator phase does), not the training-mode codes.
        paired: phases 2 and 3 run the two discriminators together, one batched product per
            layer (`networks.paired_discriminators`; the same math).
    """
    enc, dec = model.encoder, model.decoder
    cat_disc, gauss_disc = model.label_discriminator, model.latent_discriminator
    x_in = gaussian_noise(x, noise)  # (batch, in_dim)

    def encode(x_in):
        logits, z = enc(x_in)
        return logits, gaussian_noise(z, code_noise)

    def both_discriminators(y, z):  # (cat_disc(y), gauss_disc(z))
        if paired:
            return paired_discriminators(cat_disc, gauss_disc, y, z)
        return cat_disc(y), gauss_disc(z)

    # 1. Reconstruction: min BCE(x, p(x | softmax(y), z)) over encoder + decoder.
    opt["recon"].zero_grad(set_to_none=True)
    if any(view):  # y from the transformed copy, z from x: one pass over both
        copy = random_affine(x, model.image_shape, *view[:4])
        copy = gaussian_noise(random_thickness(copy, model.image_shape, view[4]), noise)
        logits, z = encode(torch.cat([x_in, copy]))
        logits, z = logits[len(x):], z[: len(x)]
    else:
        logits, z = encode(x_in)
    recon = losses.reconstruction_loss(dec(model.decoder_input(logits.softmax(1), z)), x)
    penalty = model.recon_penalty()
    optim.backward_step(recon if penalty is None else recon + penalty, opt["recon"])

    # 2. Discriminators: one-hot prior samples vs softmax(y); N(0, std^2) samples vs z.
    # One encoder pass after the reconstruction update, reused by the generator phase (the
    # encoder does not change in between).
    with dropout_off(enc, eval_codes):
        logits, z = encode(x_in)
    y_fake = logits.softmax(1)  # (batch, n_classes)
    y_real = sample_one_hot(len(x), model.n_classes, x.device)
    z_real = model.prior.sample(len(x), device=x.device)
    opt["disc"].zero_grad(set_to_none=True)
    y_both = gaussian_noise(torch.cat([y_real, y_fake.detach()]), cat_noise)  # (2 batch, n_classes)
    cat_out, gauss_out = both_discriminators(y_both, torch.cat([z_real, z.detach()]))  # one pass each
    cat_real, cat_fake = cat_out.chunk(2)
    gauss_real, gauss_fake = gauss_out.chunk(2)
    disc_cat = losses.discriminator_loss(cat_real, cat_fake)
    disc_gauss = losses.discriminator_loss(gauss_real, gauss_fake)
    optim.backward_step(disc_cat + disc_gauss, opt["disc"])

    # 3. Generator: the encoder makes softmax(y) and z look like prior samples to both.
    opt["gen"].zero_grad(set_to_none=True)
    cat_disc.requires_grad_(False)
    gauss_disc.requires_grad_(False)
    cat_gen, gauss_gen = both_discriminators(gaussian_noise(y_fake, cat_noise), z)
    gen = losses.generator_loss(cat_gen) + losses.generator_loss(gauss_gen)
    optim.backward_step(gen, opt["gen"])
    cat_disc.requires_grad_(True)
    gauss_disc.requires_grad_(True)

    acc_cat = losses.accuracy_real_fake(cat_real.detach(), cat_fake.detach())
    acc_gauss = losses.accuracy_real_fake(gauss_real.detach(), gauss_fake.detach())
    return {
        "loss/recon": recon.detach(),
        "loss/disc_cat": disc_cat.detach(),
        "loss/disc_gauss": disc_gauss.detach(),
        "loss/gen": gen.detach(),
        "acc/disc_cat_real": acc_cat[0],
        "acc/disc_cat_fake": acc_cat[1],
        "acc/disc_gauss_real": acc_gauss[0],
        "acc/disc_gauss_fake": acc_gauss[1],
    }


@torch.no_grad()
def classification_error(model: SemiSupervisedAAE, x, y, device, batch_size: int = 1000) -> float:
    """Fraction of images whose argmax q(y|x) differs from the label (eval mode)."""
    from .metrics import collect

    model.eval()
    return float((collect(model.classify, x, device, batch_size) != y).float().mean())


@torch.no_grad()
def confusion_matrix(model: SemiSupervisedAAE, x, y, device, batch_size: int = 1000) -> torch.Tensor:
    """Counts (n_classes, n_classes): row = true class, column = argmax q(y|x) (eval mode)."""
    from .metrics import collect

    model.eval()
    predicted = collect(model.classify, x, device, batch_size)
    k = model.n_classes
    return torch.bincount(y.long() * k + predicted, minlength=k * k).reshape(k, k)


def epoch_metrics(model, data, device) -> dict[str, float]:
    """Validation error when a validation split exists; the test set is never looked at here."""
    if data.val_x is None:
        return {}
    return {"eval/val_error": classification_error(model, data.val_x, data.val_y, device)}


def evaluate(model, data, device) -> dict[str, float]:
    """The final report: error of q(y|x) on the test set, and the style code's prior match."""
    from .metrics import collect, prior_match, recon_bce

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device).numpy()
    confusion = confusion_matrix(model, x, y, device).double()
    wrong = confusion.sum(1) - confusion.diagonal()  # per true class
    out = {f"{split}_error": float(wrong.sum() / confusion.sum())}
    # Per true class: the fraction of its images put in another class (a class that a whole
    # style of digit lands outside of shows up here, e.g. crossed sevens read as twos).
    # A class without images in this split gets no key (its error is undefined).
    counts = confusion.sum(1)
    out.update({f"{split}_error_class_{k}": float(wrong[k] / counts[k]) for k in range(len(counts)) if counts[k]})
    out[f"{split}_recon_bce"] = recon_bce(model, x, device)
    if data.val_x is not None:
        out["val_error"] = classification_error(model, data.val_x, data.val_y, device)
    out.update(prior_match(codes, model.prior.std))
    return out


def style_grid(model, x: torch.Tensor, device) -> torch.Tensor:
    """Rows: each image in x, then its style z decoded with y = 0..n_classes-1."""
    model.eval()
    with torch.no_grad():
        z = model.encode(x.to(device))  # (rows, z_dim)
        eye = torch.eye(model.n_classes, device=device)
        rows = [torch.cat([x[i : i + 1].to(device),
                           model.decode(eye, z[i].expand(model.n_classes, -1))]) for i in range(len(z))]  # fmt: skip
    return torch.cat(rows).cpu()


def make_plots(model, data, folder, device) -> list:
    from . import plots

    split, x, y = data.eval_split()
    model.eval()
    written = [folder / "style_grid.png", folder / "confusion.png"]
    plots.save_image_grid(style_grid(model, x[:10], device).numpy(), model.image_shape, min(10, len(x)), written[0],
                          f"style grid: {split} image, then its z with y = 0..{model.n_classes - 1}")  # fmt: skip
    plots.save_confusion(confusion_matrix(model, x, y, device).numpy(), written[1],
                         f"{split} set: true class (rows) against q(y|x)'s argmax (columns)")  # fmt: skip
    return [*plot_codes_and_samples(model, data, folder, device, 100), *written]


def plot_codes_and_samples(model, data, folder, device, n_samples: int) -> list:
    """latent.png (the evaluation split's style codes z, coloured by label) and samples.png
    (n_samples decodings of one-hot y and z from the priors, in 10 rows; y drawn for each)."""
    from . import plots
    from .metrics import collect

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device).numpy()
    written = [folder / "latent.png", folder / "samples.png"]
    plots.save_latent_scatter(codes, None if y is None else y.numpy(), written[0], f"{split} style codes z")
    torch.manual_seed(0)
    plots.save_image_grid(model.sample(n_samples).cpu().numpy(), model.image_shape, 10, written[1],
                          "samples: one-hot y and z from the priors")  # fmt: skip
    return written
