"""The adversarial autoencoder as a generative model (Makhzani et al. 2015, section 2; Fig. 1).

An encoder q(z|x) and decoder p(x|z) are trained to reconstruct; a discriminator on the code
tells prior samples from codes; the encoder, as generator, learns to fool it, so that the
aggregated posterior q(z) matches the prior p(z). Decoding prior samples then generates images.

The prior is a free choice (Fig. 2 and 4): Gaussian, a mixture of 10 Gaussians, a swiss roll, a
uniform box. With `condition_labels` N > 0 the prior is conditioned on labels (section 2.3,
Fig. 4): the discriminator also receives a one-hot label with an extra "no label" state; the code
of one of the N labeled images is compared with samples of its class's mixture component (or
swiss-roll segment), the code of an unlabeled image with samples of the whole prior.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .config import PRIOR_FIELDS, ModelConfig, TrainConfig
from .data import balanced_label_indices
from .errors import AAEError
from .networks import Decoder, Discriminator, Encoder, gaussian_noise
from . import optim
from .priors import Prior, builtin_args, check_prior, make_prior, sample_on


class UnsupervisedAAE(nn.Module):
    """Encoder, decoder, latent discriminator and prior of the unsupervised AAE.

    Args:
        in_dim: features per image (784 for MNIST).
        image_shape: shape to view one image as, for plots.
        z_dim, hidden, depth, disc_hidden, disc_depth, dropout: see `ModelConfig`.
        prior: name of a built-in prior, or any object with `dim` and `sample(n, labels=None)`
            (with `num_classes` and label-aware sampling for `condition_labels`).
        prior_std, prior_scale, prior_components, prior_std_along, prior_std_across: the
            built-in prior's parameters, see `ModelConfig` and `priors.make_prior`.
        condition_labels: labeled training images the prior is conditioned on (0: none).
    """

    kind = "unsupervised"

    def __init__(
        self,
        in_dim: int = 784,
        image_shape: tuple[int, ...] = (28, 28),
        z_dim: int = 2,
        hidden: int = 1000,
        depth: int = 2,
        disc_hidden: int = 1000,
        disc_depth: int = 2,
        dropout: float = 0.2,
        prior: str | Prior = "gaussian",
        prior_std: float = 5.0,
        prior_scale: float | None = None,
        prior_components: int = 10,
        prior_std_along: float = 0.5,
        prior_std_across: float = 0.05,
        condition_labels: int = 0,
    ):
        super().__init__()
        before = None
        if (spec := builtin_args(prior)) is not None:  # recorded by name: reloads without it
            check_prior(prior, z_dim)
            before = prior_std  # earlier versions recorded "custom" and the prior_std argument
            given = _changed_prior_args(prior_std=prior_std, prior_scale=prior_scale,
                                        prior_components=prior_components, prior_std_along=prior_std_along,
                                        prior_std_across=prior_std_across)  # fmt: skip
            if given:
                raise AAEError(f"{', '.join(f'{k}={v!r}' for k, v in given.items())} given with "
                               f"prior={prior!r}, which has its own: give the prior's parameters "
                               f"one way, in the object or as prior_* arguments")  # fmt: skip
            prior, prior_std = spec["prior"], spec.get("prior_std", prior_std)
            prior_scale = spec.get("prior_scale", prior_scale)
            prior_components = spec.get("prior_components", prior_components)
            prior_std_along = spec.get("prior_std_along", prior_std_along)
            prior_std_across = spec.get("prior_std_across", prior_std_across)
        # Constructor arguments, saved in checkpoints to rebuild the model (never pickled objects).
        self.model_args = dict(
            in_dim=in_dim, image_shape=list(image_shape), z_dim=z_dim, hidden=hidden,
            depth=depth, disc_hidden=disc_hidden, disc_depth=disc_depth, dropout=dropout,
            prior=prior if isinstance(prior, str) else "custom", prior_std=prior_std,
        )  # fmt: skip
        # The later arguments are recorded only where they matter, so that the model_args (and
        # the checkpoints) of a Gaussian, unconditioned model are those of earlier versions.
        prior_args = dict(scale=prior_scale, components=prior_components,
                          std_along=prior_std_along, std_across=prior_std_across)  # fmt: skip
        custom_std = {} if isinstance(prior, str) else {"prior_std": prior_std}  # recorded, never read
        _refuse_unrecorded_prior_args(prior, **custom_std, **{f"prior_{k}": v for k, v in prior_args.items()})
        if isinstance(prior, str) and prior != "gaussian":
            self.model_args.update({f"prior_{k}": v for k, v in prior_args.items()})
        if isinstance(condition_labels, bool) or not (isinstance(condition_labels, int) and condition_labels >= 0):
            raise AAEError(f"condition_labels {condition_labels!r}: must be an integer >= 0")
        if condition_labels:
            self.model_args["condition_labels"] = condition_labels
        if before is not None:  # what earlier versions recorded: `fit` resumes their runs under it
            self.model_args_before = {k: v for k, v in self.model_args.items() if not k.startswith("prior")}
            self.model_args_before.update(prior="custom", prior_std=before)
        self.image_shape = tuple(image_shape)
        if isinstance(prior, str):
            prior = make_prior(prior, z_dim, prior_std, **prior_args)
        else:
            check_prior(prior, z_dim, conditioned=bool(condition_labels))
        self.prior = prior
        # Conditioned: the discriminator's input is z and a one-hot label with K + 1 states.
        self.condition_classes = condition_classes(self.prior) if condition_labels else 0
        disc_in = z_dim + (self.condition_classes + 1 if condition_labels else 0)
        self.encoder = Encoder(in_dim, z_dim, [hidden] * depth, dropout)  # q(z|x)
        self.decoder = Decoder(z_dim, in_dim, [hidden] * depth)  # p(x|z)
        self.latent_discriminator = Discriminator(disc_in, [disc_hidden] * disc_depth)  # D

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape, prior=None):
        return cls(
            in_dim, image_shape, cfg.z_dim, cfg.hidden, cfg.depth, cfg.disc_hidden,
            cfg.disc_depth, cfg.dropout, prior if prior is not None else cfg.prior, cfg.prior_std,
            cfg.prior_scale, cfg.prior_components, cfg.prior_std_along, cfg.prior_std_across,
            cfg.condition_labels,
        )  # fmt: skip

    @property
    def z_dim(self) -> int:
        return self.model_args["z_dim"]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) -> codes (batch, z_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, z_dim) -> pixel probabilities (batch, in_dim)."""
        return torch.sigmoid(self.decoder(z))

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) -> pixel logits of the reconstruction (batch, in_dim)."""
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode `n` prior samples: (n, in_dim) pixel probabilities; with `labels` (n,), of a
        model trained with --condition-labels, each drawn from its class's part of the prior."""
        device = next(self.parameters()).device
        if labels is None:
            return self.decode(sample_on(self.prior, n, device))
        if not self.condition_classes:
            raise AAEError("this model was not trained with --condition-labels: its prior has no "
                           "part per class to draw from")  # fmt: skip
        if len(labels) != n:
            raise AAEError(f"{n} samples but {len(labels)} labels")
        return self.decode(sample_on(self.prior, n, device, torch.as_tensor(labels).to(device)))


MODEL = UnsupervisedAAE  # the variant registry's entry point


def _refuse_unrecorded_prior_args(prior, **given) -> None:
    """Refuse a prior argument given with a prior that reads none: a shape argument with the
    Gaussian or a custom prior, prior_std with a custom one. It was dropped without a word
    (model_args record the shape arguments for the other priors only, where `fit` refuses the
    ones a prior does not read, as `aae train` refuses their flags)."""
    if isinstance(prior, str) and prior != "gaussian":
        return
    for field, value in _changed_prior_args(**given).items():
        readers = [p for p, fields in PRIOR_FIELDS.items() if field in fields]
        raise AAEError(f"{field}={value!r}: prior={prior!r} does not read it; only the {', '.join(readers)} "
                       f"{'prior does' if len(readers) == 1 else 'priors do'}")  # fmt: skip


def _changed_prior_args(**given) -> dict:
    """The prior_* arguments among `given` whose values are not UnsupervisedAAE's defaults."""
    defaults = inspect.signature(UnsupervisedAAE.__init__).parameters
    return {field: value for field, value in given.items() if value != defaults[field].default}


def condition_classes(prior) -> int:
    """K, the number of parts of a prior that can be conditioned on labels."""
    k = getattr(prior, "num_classes", None)
    if not isinstance(k, int) or k <= 0:
        raise AAEError(f"conditioning on labels needs a prior made of parts (with num_classes), "
                       f"such as the mixture or the swiss roll; {prior!r} is not one")  # fmt: skip
    return k


def label_one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Labels (n,) in -1..k-1 -> one-hot (n, k + 1); -1 ("no label") becomes the last state."""
    return F.one_hot(torch.where(labels < 0, k, labels), k + 1).float()


def make_optimizers(model: UnsupervisedAAE, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per phase: reconstruction (encoder + decoder), discriminator, generator."""
    return {
        "recon": optim.make([*model.encoder.parameters(), *model.decoder.parameters()], cfg.lr_recon, cfg),
        "disc": optim.make(model.latent_discriminator.parameters(), cfg.lr_reg, cfg, regularization=True),
        "gen": optim.make(model.encoder.parameters(), cfg.lr_reg, cfg, regularization=True),
    }


def setup(model, data, config, device, run_path) -> dict:
    """The step's context: the std of the noise on the encoder's input and on its code, and the
    discriminator's instance noise (its start and the run's number of steps, over which it falls
    to 0). Conditioned on labels, also: draw the labeled images (class-balanced, by seed) and
    give the loop the labels its step may see, "train_y": the label of each labeled image, -1
    for every other image (their true labels never reach the step); their indices are saved to
    the run folder."""
    t = config.train
    ctx = {"input_noise": t.input_noise, "code_noise": t.code_noise, "disc_noise": t.disc_noise,
           "total_steps": t.epochs * -(-len(data.train_x) // t.batch_size)}  # fmt: skip
    n = model.model_args.get("condition_labels", 0)
    if not n:
        return ctx
    if data.train_y is None:
        raise AAEError(f"--condition-labels {n}: {data.name} has no labels")
    if data.num_classes != model.condition_classes:
        raise AAEError(f"--condition-labels: the prior has {model.condition_classes} parts, the "
                       f"data {data.num_classes} classes; "
                       f"set --prior-components {data.num_classes}")  # fmt: skip
    idx = balanced_label_indices(data.train_y, n, data.num_classes, config.data_draw_seed,
                                 "--condition-labels")  # fmt: skip
    visible = torch.full_like(data.train_y, -1)  # (n_train,)
    visible[idx] = data.train_y[idx]
    return {**ctx, "run_files": {"labeled_indices.json": idx.tolist()}, "train_y": visible.to(device)}


def instance_noise(ctx: dict | None, step: int) -> float:
    """The std of the discriminator's instance noise at `step`: --disc-noise, falling linearly
    to 0 over the run, so that at the end the discriminator compares the codes themselves."""
    if not ctx or not ctx.get("disc_noise"):
        return 0.0
    return ctx["disc_noise"] * max(0.0, 1.0 - step / max(ctx["total_steps"], 1))


def train_step(model: UnsupervisedAAE, opt: dict, x: torch.Tensor, y=None, ctx=None, step=0):
    """One mini-batch of the three phases, in the paper's order.

    Args:
        y: used only by a model conditioned on labels: the batch's visible labels (batch,),
            -1 where an image is unlabeled (the loop takes them from ctx["train_y"]); None: all
            unlabeled.

    Returns:
        Losses and discriminator accuracies as 0-d tensors (no host sync).
    """
    enc, dec, disc = model.encoder, model.decoder, model.latent_discriminator
    ctx = ctx or {}
    input_noise, code_noise = ctx.get("input_noise", 0.0), ctx.get("code_noise", 0.0)
    x_in = gaussian_noise(x, input_noise)  # (batch, in_dim)

    def code(x_in):  # z ~ q(z|x): the encoder's output, plus N(0, code_noise^2) (Gaussian posterior)
        return gaussian_noise(enc(x_in), code_noise)  # (batch, z_dim)

    # 1. Reconstruction: min BCE(x, p(x | z)), z ~ q(z|x_in), over encoder + decoder (x_in: x,
    # or x with --input-noise: a denoising autoencoder).
    opt["recon"].zero_grad(set_to_none=True)
    recon = losses.reconstruction_loss(dec(code(x_in)), x)
    optim.backward_step(recon, opt["recon"])

    # 2-3. Discriminator, then generator (adversarial_phases). The codes are computed once,
    # after the reconstruction update, and serve both phases.
    z_fake = code(x_in)  # (batch, z_dim), with graph for the generator phase
    noise = instance_noise(ctx, step)

    if model.condition_classes:
        # Conditioned: a labeled code is compared with its class's part of the prior, an
        # unlabeled one with the whole prior; both sides carry the same one-hot (batch, K + 1).
        labels = torch.full((len(x),), -1, device=x.device) if y is None else y
        z_real = sample_on(model.prior, len(x), x.device, labels)
    else:
        z_real = sample_on(model.prior, len(x), x.device)  # (batch, z_dim)
    # Instance noise on both sides, on the codes (never on a label's one-hot).
    z_real, z_fake = gaussian_noise(z_real, noise), gaussian_noise(z_fake, noise)
    if model.condition_classes:
        onehot = label_one_hot(labels, model.condition_classes)
        z_real, z_fake = torch.cat([z_real, onehot], 1), torch.cat([z_fake, onehot], 1)
    return {"loss/recon": recon.detach(), **adversarial_phases(disc, opt, z_real, z_fake)}


def adversarial_phases(disc, opt: dict, z_real: torch.Tensor, z_fake: torch.Tensor) -> dict:
    """Phases 2 and 3 of a step with one latent discriminator (the unsupervised and supervised
    models): `z_real` from the prior, `z_fake` from the encoder with its graph, computed once
    after the reconstruction update (the encoder does not change during phase 2).

    Returns:
        loss/disc, loss/gen and the discriminator's accuracies, as 0-d tensors.
    """
    # 2. Discriminator: max log D(z ~ prior) + log(1 - D(q(z|x))) over the discriminator.
    opt["disc"].zero_grad(set_to_none=True)
    # Real and fake in one pass (one matrix product per layer; the same values as two passes).
    real_logits, fake_logits = disc(torch.cat([z_real, z_fake.detach()])).split([len(z_real), len(z_fake)])
    disc_loss = losses.discriminator_loss(real_logits, fake_logits)
    optim.backward_step(disc_loss, opt["disc"])

    # 3. Generator: max log D(q(z|x)) over the encoder, against the updated discriminator.
    opt["gen"].zero_grad(set_to_none=True)
    disc.requires_grad_(False)  # only the encoder learns here; skip the discriminator's grads
    gen_loss = losses.generator_loss(disc(z_fake))
    optim.backward_step(gen_loss, opt["gen"])
    disc.requires_grad_(True)

    acc_real, acc_fake = losses.accuracy_real_fake(real_logits.detach(), fake_logits.detach())
    return {
        "loss/disc": disc_loss.detach(),
        "loss/gen": gen_loss.detach(),
        "acc/disc_real": acc_real,
        "acc/disc_fake": acc_fake,
    }


def epoch_metrics(model: UnsupervisedAAE, data, device) -> dict[str, float]:
    """Logged after every epoch: the reconstruction BCE on the test set."""
    from .metrics import recon_bce

    split, x, _ = data.eval_split()
    return {f"eval/{split}_recon_bce": recon_bce(model, x, device)}


def evaluate(model: UnsupervisedAAE, data, device) -> dict[str, float]:
    """Final metrics on the test set (the training set for a .npz without test arrays).

    For a prior made of parts (mixture, swiss roll): the smallest and largest fraction of the
    codes that fall in each part (1/K each when the codes fill the prior evenly) and, with
    labels, the fraction of codes in their class's part (the conditioned prior's aim).
    """
    from .metrics import collect, prior_match, recon_bce

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device)
    out = {f"{split}_recon_bce": recon_bce(model, x, device)}
    if hasattr(model.prior, "std"):
        out.update(prior_match(codes.numpy(), model.prior.std))
    if hasattr(model.prior, "assign"):
        part = model.prior.assign(codes)
        share = part.bincount(minlength=model.prior.num_classes).float() / len(part)
        out.update(part_share_min=float(share.min()), part_share_max=float(share.max()))
        if y is not None and model.condition_classes:
            out[f"{split}_part_accuracy"] = float((part == y).float().mean())
    return out


def manifold(model: UnsupervisedAAE, n: int = 20, extent: float | None = None) -> torch.Tensor:
    """Decode a uniform n x n grid over [-extent, extent]^2 in the first two code dimensions
    (the others 0). The default extent is 2 prior std devs for a Gaussian prior ([-10, 10] for
    the blog's std 5), else the largest |coordinate| of 10,000 prior samples."""
    if extent is None:
        extent = manifold_extent(model)
    device = next(model.parameters()).device
    axis = torch.linspace(-extent, extent, n)
    grid = torch.zeros(n * n, model.z_dim)
    grid[:, 0] = axis.repeat(n)  # x varies along a row
    grid[:, 1] = axis.flip(0).repeat_interleave(n)  # y decreases down the rows
    with torch.no_grad():
        return model.decode(grid.to(device)).cpu()


def manifold_extent(model: UnsupervisedAAE) -> float:
    """`manifold`'s default half-width: 2 prior std devs, else the prior samples' largest |coordinate|."""
    return 2 * model.prior.std if hasattr(model.prior, "std") else prior_extent(model.prior)


def prior_extent(prior, n: int = 10_000) -> float:
    """The largest |coordinate| in the first two dimensions of n prior samples (seeded; the
    global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return float(prior.sample(n)[:, :2].abs().max())


def prior_for_plot(model: UnsupervisedAAE, n: int = 5000):
    """(samples (n, 2), labels (n,) or None) of a 2-D prior to draw behind the codes, seeded;
    labelled by part when the prior is conditioned on labels. None for other priors."""
    if model.z_dim != 2:
        return None
    k = model.condition_classes
    labels = torch.arange(n) % k if k else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        z = model.prior.sample(n, labels=labels) if k else model.prior.sample(n)
    return z.cpu().numpy(), None if labels is None else labels.numpy()


def make_plots(model: UnsupervisedAAE, data, folder, device) -> list:
    """Latent scatter, manifold grid (2-D codes) and prior samples, as PNGs in `folder`."""
    from . import plots
    from .metrics import collect

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device).numpy()
    written = [folder / "latent.png", folder / "samples.png"]
    plots.save_latent_scatter(codes, None if y is None else y.numpy(), written[0], f"{split} codes",
                              prior=prior_for_plot(model))  # fmt: skip
    torch.manual_seed(0)
    plots.save_image_grid(model.sample(100).cpu().numpy(), model.image_shape, 10, written[1],
                          "decoded prior samples")  # fmt: skip
    if model.z_dim == 2:
        written.append(folder / "manifold.png")
        e = manifold_extent(model)
        plots.save_image_grid(manifold(model, extent=e).numpy(), model.image_shape, 20, written[-1],
                              f"manifold: codes decoded over [-{e:.3g}, {e:.3g}]²\n"
                              "(z1 left to right, z2 bottom to top)")  # fmt: skip
    return written
