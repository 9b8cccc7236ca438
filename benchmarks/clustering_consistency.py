"""The clustering exploration rows of docs/results.md that ran outside the package's flags.

The clustering model trained by `aae train clustering ...` (every flag passes through), with its
step replaced according to CLUSTER_MODE:

  kl    the package's three phases, then from step CONS_START on a consistency step with the
        reconstruction optimizer: CONS_W * KL(q(y|x) || q(y|copy)), the target q(y|x) held
        fixed, copy = `random_affine(x, *CONS_AUG)`. Not in the package: it put every image in
        one cluster (weight 1) or held the error at 50% (weight 0.3 from step 500).
  view  the reconstruction phase decodes x from y of the copy and z of x, then phases 2-3 on x:
        the computation of the package's view-* flags (which replaced it), its random draws in
        another order.

    CLUSTER_MODE=kl CONS_W=1 python benchmarks/clustering_consistency.py train clustering \\
        --clusters 16 --z-dim 2 --cat-noise 0.2 --lr-reg 5e-4 --epochs 20 --val-size 10000 \\
        --precision bf16 --seed 0 --out runs/proto-kl
    CLUSTER_MODE=kl CONS_W=0.3 CONS_START=500 python benchmarks/clustering_consistency.py ...
    CLUSTER_MODE=view [CONS_AUG=20,0.15,2,34] python benchmarks/clustering_consistency.py ...

CONS_AUG: rotate degrees, zoom, shift pixels, elastic scale (default 20,0.15,2,0).
"""

from __future__ import annotations

import os
import sys

import torch

from torch_aae import clustering, losses, optim
from torch_aae.augment import random_affine
from torch_aae.networks import gaussian_noise
from torch_aae.semi_supervised import adversarial_autoencoder_phases, sample_one_hot

MODE = os.environ.get("CLUSTER_MODE", "kl")
W = float(os.environ.get("CONS_W", "1"))
START = int(os.environ.get("CONS_START", "0"))
AUG = tuple(float(v) for v in os.environ.get("CONS_AUG", "20,0.15,2,0").split(","))


def kl_step(model, opt, x, y=None, ctx=None, step=0):
    logs = adversarial_autoencoder_phases(model, opt, x, ctx["input_noise"], ctx["code_noise"], ctx["cat_noise"])
    if step < START:
        return logs
    opt["recon"].zero_grad(set_to_none=True)
    copy = random_affine(x, model.image_shape, *AUG)
    logits, _ = model.encoder(gaussian_noise(torch.cat([x, copy]), ctx["input_noise"]))
    own, other = logits.float().chunk(2)
    target = own.detach().softmax(1)
    loss = W * (target * (target.clamp_min(1e-8).log() - other.log_softmax(1))).sum(1).mean()
    optim.backward_step(loss, opt["recon"])
    logs["loss/cons"] = loss.detach()
    return logs


def view_step(model, opt, x, y=None, ctx=None, step=0):
    enc, dec, noise, cat_noise = model.encoder, model.decoder, ctx["input_noise"], ctx["cat_noise"]
    opt["recon"].zero_grad(set_to_none=True)
    copy = random_affine(x, model.image_shape, *AUG)
    logits, z = enc(gaussian_noise(torch.cat([x, copy]), noise))
    y_copy, z_x = logits.chunk(2)[1], z.chunk(2)[0]
    recon = losses.reconstruction_loss(dec(model.decoder_input(y_copy.softmax(1), gaussian_noise(z_x, ctx["code_noise"]))), x)
    optim.backward_step(recon, opt["recon"])
    cat_disc, gauss_disc = model.label_discriminator, model.latent_discriminator
    logits, z = enc(gaussian_noise(x, noise))
    z = gaussian_noise(z, ctx["code_noise"])
    y_fake = logits.softmax(1)
    y_real = sample_one_hot(len(x), model.n_classes, x.device)
    z_real = model.prior.sample(len(x), device=x.device)
    opt["disc"].zero_grad(set_to_none=True)
    cat_real, cat_fake = cat_disc(gaussian_noise(torch.cat([y_real, y_fake.detach()]), cat_noise)).chunk(2)
    gauss_real, gauss_fake = gauss_disc(torch.cat([z_real, z.detach()])).chunk(2)
    disc = losses.discriminator_loss(cat_real, cat_fake) + losses.discriminator_loss(gauss_real, gauss_fake)
    optim.backward_step(disc, opt["disc"])
    opt["gen"].zero_grad(set_to_none=True)
    cat_disc.requires_grad_(False)
    gauss_disc.requires_grad_(False)
    gen = losses.generator_loss(cat_disc(gaussian_noise(y_fake, cat_noise))) + losses.generator_loss(gauss_disc(z))
    optim.backward_step(gen, opt["gen"])
    cat_disc.requires_grad_(True)
    gauss_disc.requires_grad_(True)
    acc = losses.accuracy_real_fake(cat_real.detach(), cat_fake.detach())
    return {"loss/recon": recon.detach(), "loss/disc": disc.detach(), "loss/gen": gen.detach(),
            "acc/disc_cat_real": acc[0], "acc/disc_cat_fake": acc[1]}  # fmt: skip


if __name__ == "__main__":
    if MODE not in ("kl", "view"):
        sys.exit(f"CLUSTER_MODE={MODE!r}: choose kl or view")
    clustering.train_step = kl_step if MODE == "kl" else view_step
    from torch_aae.cli import main

    sys.exit(main(sys.argv[1:]))
