"""The permutation-invariant 100-label probes of docs/results.md that ran outside the package's flags.

The semi-supervised model trained by `aae train semi-supervised ...` (every flag passes through),
with phase 4 (supervised) changed according to SEMI_PROBE; phases 1-3 are the package's (but
for eval-adv, which changes phases 2-3 instead). Each
extra term is added to the supervised loss and stepped by the supervised optimizer (trunk and
class head). None of them uses the pixels' layout. None of the supervised-phase probes helped;
eval-adv led on validation and is now the flag --adv-eval-codes (the table in docs/results.md).

  pi-kl       + W * KL(q(y|x') || q(y|x'')) on the unlabeled batch: two draws of the input noise
              and dropout, the first held fixed (a Pi-model / Gamma-model consistency).
  pi-mse      + W * mean squared difference of the class logits of the same two draws (the logits,
              not the softmax, which saturates).
  vat         + KL(q(y|x) || q(y|x + r)), r the virtual adversarial direction of L2 norm W found by
              one power iteration from a random direction of norm XI (Miyato et al.); dropout off,
              no input noise.
  vat-masked  the same around the noisy input x', with one dropout mask for its three passes.
  mixup       the labeled batch mixed with a permutation of itself, lambda ~ Beta(W, W), and the
              cross-entropy mixed alike (Zhang et al.).
  swap-data   the labeled batch doubled with decodings of (one-hot label, z of an unlabeled image),
              labeled with that label.
  swap-prior  the same with z drawn from the prior.
  label-noise the labeled images get Gaussian noise of std W instead of --input-noise's.
  label-mask  each pixel of each labeled image is zeroed with probability W, before the noise.
  eval-adv    phase 4 unchanged; phases 2-3 (discriminators, generator) read the codes of the
              encoder with its dropout off (eval mode; the input noise stays), as the blog's
              discriminator phase does, instead of the package's train-mode codes.

    SEMI_PROBE=pi-kl PROBE_W=1 python benchmarks/semi_pi_probes.py train semi-supervised \\
        --labels 100 --input-noise 0.3 --val-size 10000 --epochs 100 --lr-step 70 \\
        --precision bf16 --seed 10 --out runs/s13-probe-pi1

PROBE_W: the weight (pi-kl, pi-mse), the radius (vat, vat-masked), the Beta parameter (mixup),
the noise's std (label-noise) or the share of pixels zeroed (label-mask); default 1. PROBE_XI: the power iteration's first radius (default 1: under bf16 a smaller step
would be rounded away). The swap probes take no W.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

from torch_aae import optim, semi_supervised
from torch_aae.augment import random_affine
from torch_aae.data import cycled_batch
from torch_aae.networks import Dropout, gaussian_noise

PROBES = ("pi-kl", "pi-mse", "vat", "vat-masked", "mixup", "swap-data", "swap-prior", "label-noise", "label-mask",
          "eval-adv")
PROBE = os.environ.get("SEMI_PROBE", "")
W = float(os.environ.get("PROBE_W", "1"))
XI = float(os.environ.get("PROBE_XI", "1"))


def _kl(log_q, log_target):
    return F.kl_div(log_q, log_target, log_target=True, reduction="batchmean")


def _vat(classify, x0):
    """KL(classify(x0) || classify(x0 + r)) at the adversarial r of radius W (one power step)."""
    with torch.no_grad():
        target = classify(x0).log_softmax(1)
    d = torch.randn_like(x0)
    d = (XI * d / d.norm(dim=1, keepdim=True)).requires_grad_(True)
    (g,) = torch.autograd.grad(_kl(classify(x0 + d).log_softmax(1), target), d)
    r = W * g / (g.norm(dim=1, keepdim=True) + 1e-12)
    return _kl(classify(x0 + r.detach()).log_softmax(1), target)


def _eval_adversarial_phases(model, *args):
    """Phases 1-3 with the encoder's second pass (phases 2-3) in eval mode: dropout off."""
    enc = model.encoder
    forward, calls = enc.forward, []

    def second_pass_in_eval_mode(x_in):
        calls.append(1)
        if len(calls) == 1:
            return forward(x_in)
        drops = [m for m in enc.modules() if isinstance(m, Dropout)]
        for m in drops:
            m.train(False)
        try:
            return forward(x_in)
        finally:
            for m in drops:
                m.train(True)

    enc.forward = second_pass_in_eval_mode
    try:
        return semi_supervised.adversarial_autoencoder_phases(model, *args)
    finally:
        del enc.forward
        assert len(calls) == 2, calls


def probe_step(model, opt, x, y=None, ctx=None, step=0):
    """`semi_supervised.train_step` with the probe's change to phase 4 (eval-adv: to phases 2-3)."""
    phases = _eval_adversarial_phases if PROBE == "eval-adv" else semi_supervised.adversarial_autoencoder_phases
    logs = phases(model, opt, x, ctx["input_noise"], ctx["code_noise"], ctx["cat_noise"], ctx["view"])
    enc, noise = model.encoder, ctx["input_noise"]
    idx = ctx.get("labeled_idx")
    if idx is None:
        idx = cycled_batch(len(ctx["x"]), ctx["batch_size"], ctx["seed"], step).to(x.device)
    xl, yl = ctx["x"][idx], ctx["y"][idx]
    if any(ctx["label_augment"]):
        xl = random_affine(xl, ctx["image_shape"], *ctx["label_augment"], ctx["label_elastic_sigma"])
    if PROBE == "label-mask":
        xl = xl * (torch.rand_like(xl) >= W)
    xl = gaussian_noise(xl, W if PROBE == "label-noise" else noise)
    opt["sup"].zero_grad(set_to_none=True)
    if PROBE.startswith("swap"):
        with torch.no_grad():
            if PROBE == "swap-data":
                zs = enc(gaussian_noise(x, noise))[1][: len(yl)]
            else:
                zs = model.prior.sample(len(yl), device=x.device)
            xg = model.decode(F.one_hot(yl.long(), model.n_classes).to(zs.dtype), zs).float()
        xl, yl = torch.cat([xl, gaussian_noise(xg, noise)]), torch.cat([yl, yl])
    if PROBE == "mixup":
        lam = float(torch.distributions.Beta(W, W).sample())
        perm = torch.randperm(len(xl), device=xl.device)
        logits = enc.classify(lam * xl + (1 - lam) * xl[perm])
        sup = lam * F.cross_entropy(logits, yl) + (1 - lam) * F.cross_entropy(logits, yl[perm])
    else:
        sup = F.cross_entropy(enc.classify(xl), yl)
    total = sup
    if PROBE in ("pi-kl", "pi-mse"):
        with torch.no_grad():
            target = enc.classify(gaussian_noise(x, noise)).float()
        pred = enc.classify(gaussian_noise(x, noise)).float()
        if PROBE == "pi-kl":
            extra = _kl(pred.log_softmax(1), target.log_softmax(1))
        else:
            extra = F.mse_loss(pred, target)
        total = total + W * extra
        logs["loss/cons"] = extra.detach()
    elif PROBE == "vat-masked":
        body, drop = enc.trunk[:2], enc.trunk[2]
        x0 = gaussian_noise(x, noise)
        keep = (torch.rand(len(x), enc.class_head.in_features, device=x.device) >= drop.p).float() / (1 - drop.p)
        vat = _vat(lambda inp: enc.class_head(body(inp) * keep).float(), x0)
        total = total + vat
        logs["loss/vat"] = vat.detach()
    elif PROBE == "vat":
        drops = [m for m in enc.trunk.modules() if isinstance(m, Dropout)]
        for m in drops:
            m.train(False)
        vat = _vat(lambda inp: enc.classify(inp).float(), x)
        for m in drops:
            m.train(True)
        total = total + vat
        logs["loss/vat"] = vat.detach()
    optim.backward_step(total, opt["sup"])
    logs["loss/sup"] = sup.detach()
    return logs


if __name__ == "__main__":
    if PROBE not in PROBES:
        sys.exit(f"SEMI_PROBE={PROBE!r}: choose one of {', '.join(PROBES)}")
    semi_supervised.train_step = probe_step
    from torch_aae.cli import main

    sys.exit(main(sys.argv[1:]))
