"""The adversarial autoencoder as a generative model (Makhzani et al. 2015, section 2; Fig. 1).

An encoder q(z|x) and decoder p(x|z) are trained to reconstruct; a discriminator on the code
tells prior samples from codes; the encoder, as generator, learns to fool it, so that the
aggregated posterior q(z) matches the prior p(z). Decoding prior samples then generates images.
"""

from __future__ import annotations

import torch
from torch import nn

from . import losses
from .config import ModelConfig, TrainConfig
from .networks import Decoder, Discriminator, Encoder
from .optim import adam
from .priors import Prior, make_prior


class UnsupervisedAAE(nn.Module):
    """Encoder, decoder, latent discriminator and prior of the unsupervised AAE.

    Args:
        in_dim: features per image (784 for MNIST).
        image_shape: shape to view one image as, for plots.
        z_dim, hidden, depth, disc_hidden, disc_depth, dropout: see `ModelConfig`.
        prior: name of a built-in prior, or any object with `dim` and `sample(n, labels=None)`.
        prior_std: standard deviation of the built-in Gaussian prior.
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
    ):
        super().__init__()
        # Constructor arguments, saved in checkpoints to rebuild the model (never pickled objects).
        self.model_args = dict(
            in_dim=in_dim, image_shape=list(image_shape), z_dim=z_dim, hidden=hidden,
            depth=depth, disc_hidden=disc_hidden, disc_depth=disc_depth, dropout=dropout,
            prior=prior if isinstance(prior, str) else "custom", prior_std=prior_std,
        )  # fmt: skip
        self.image_shape = tuple(image_shape)
        self.prior = make_prior(prior, z_dim, prior_std) if isinstance(prior, str) else prior
        self.encoder = Encoder(in_dim, z_dim, [hidden] * depth, dropout)  # q(z|x)
        self.decoder = Decoder(z_dim, in_dim, [hidden] * depth)  # p(x|z)
        self.latent_discriminator = Discriminator(z_dim, [disc_hidden] * disc_depth)  # D

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape, prior=None):
        return cls(
            in_dim, image_shape, cfg.z_dim, cfg.hidden, cfg.depth, cfg.disc_hidden,
            cfg.disc_depth, cfg.dropout, prior if prior is not None else cfg.prior, cfg.prior_std,
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
    def sample(self, n: int) -> torch.Tensor:
        """Decode `n` prior samples: (n, in_dim) pixel probabilities."""
        device = next(self.parameters()).device
        return self.decode(self.prior.sample(n).to(device))


MODEL = UnsupervisedAAE  # the variant registry's entry point


def make_optimizers(model: UnsupervisedAAE, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per phase: reconstruction (encoder + decoder), discriminator, generator."""
    reg_betas = (cfg.beta1_reg, 0.999)
    return {
        "recon": adam([*model.encoder.parameters(), *model.decoder.parameters()], cfg.lr_recon),
        "disc": adam(model.latent_discriminator.parameters(), cfg.lr_reg, reg_betas),
        "gen": adam(model.encoder.parameters(), cfg.lr_reg, reg_betas),
    }


def setup(model, data, config, device, run_path) -> None:
    """Nothing beyond the batches is needed: no step context."""
    return None


def train_step(model: UnsupervisedAAE, opt: dict, x: torch.Tensor, y=None, ctx=None, step=0):
    """One mini-batch of the three phases, in the paper's order. Labels are not used.

    Returns:
        Losses and discriminator accuracies as 0-d tensors (no host sync).
    """
    enc, dec, disc = model.encoder, model.decoder, model.latent_discriminator

    # 1. Reconstruction: min BCE(x, p(x | q(z|x))) over encoder + decoder.
    opt["recon"].zero_grad(set_to_none=True)
    recon = losses.reconstruction_loss(dec(enc(x)), x)
    recon.backward()
    opt["recon"].step()

    # 2. Discriminator: max log D(z ~ prior) + log(1 - D(q(z|x))) over the discriminator.
    # The codes are computed once, after the reconstruction update; the encoder does not change
    # during this phase, so the generator phase below reuses the same forward pass.
    z_fake = enc(x)  # (batch, z_dim), with graph for the generator phase
    z_real = model.prior.sample(len(x)).to(x.device)  # (batch, z_dim); a no-op on the CPU
    opt["disc"].zero_grad(set_to_none=True)
    real_logits, fake_logits = disc(z_real), disc(z_fake.detach())
    disc_loss = losses.discriminator_loss(real_logits, fake_logits)
    disc_loss.backward()
    opt["disc"].step()

    # 3. Generator: max log D(q(z|x)) over the encoder, against the updated discriminator.
    opt["gen"].zero_grad(set_to_none=True)
    disc.requires_grad_(False)  # only the encoder learns here; skip the discriminator's grads
    gen_loss = losses.generator_loss(disc(z_fake))
    gen_loss.backward()
    disc.requires_grad_(True)
    opt["gen"].step()

    acc_real, acc_fake = losses.accuracy_real_fake(real_logits.detach(), fake_logits.detach())
    return {
        "loss/recon": recon.detach(),
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
    """Final metrics on the test set (the training set for a .npz without test arrays)."""
    from .metrics import collect, prior_match, recon_bce

    split, x, _ = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device)
    out = {f"{split}_recon_bce": recon_bce(model, x, device)}
    if hasattr(model.prior, "std"):
        out.update(prior_match(codes.numpy(), model.prior.std))
    return out


def manifold(model: UnsupervisedAAE, n: int = 20, extent: float | None = None) -> torch.Tensor:
    """Decode a uniform n x n grid over [-extent, extent]^2 in the first two code dimensions
    (the others 0). The default extent is 2 prior std devs: [-10, 10] for the blog's std 5."""
    if extent is None:
        extent = 2 * getattr(model.prior, "std", 1.0)
    device = next(model.parameters()).device
    axis = torch.linspace(-extent, extent, n)
    grid = torch.zeros(n * n, model.z_dim)
    grid[:, 0] = axis.repeat(n)  # x varies along a row
    grid[:, 1] = axis.flip(0).repeat_interleave(n)  # y decreases down the rows
    with torch.no_grad():
        return model.decode(grid.to(device)).cpu()


def make_plots(model: UnsupervisedAAE, data, folder, device) -> list:
    """Latent scatter, manifold grid (2-D codes) and prior samples, as PNGs in `folder`."""
    from . import plots
    from .metrics import collect

    split, x, y = data.eval_split()
    model.eval()
    codes = collect(model.encode, x, device).numpy()
    written = [folder / "latent.png", folder / "samples.png"]
    plots.save_latent_scatter(codes, None if y is None else y.numpy(), written[0], f"{split} codes")
    torch.manual_seed(0)
    plots.save_image_grid(model.sample(100).cpu().numpy(), model.image_shape, 10, written[1],
                          "decoded prior samples")  # fmt: skip
    if model.z_dim == 2:
        written.append(folder / "manifold.png")
        plots.save_image_grid(manifold(model).numpy(), model.image_shape, 20, written[-1],
                              "manifold: decoded grid over the code space")  # fmt: skip
    return written
