"""Pure loss functions. Discriminators output logits: "real" = drawn from the prior = 1,
"fake" = produced by the encoder = 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy between decoder logits and images in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logits, x)


def _few_kernels(t: torch.Tensor) -> bool:
    """Whether the adversarial losses take their softplus form: on CUDA, where a step at batch
    100 is bound by its number of kernels. -log sigmoid(l) = softplus(-l) and -log(1 -
    sigmoid(l)) = softplus(l): one kernel forward and one backward, where binary cross-entropy
    with logits takes about five and four, and its target a fill. On CPU the cross-entropy form
    stays, so that CPU runs give, bit for bit, what they gave before."""
    return t.is_cuda


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(prior sample) - log(1 - D(code)), averaged over both halves."""
    if _few_kernels(real_logits):
        return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log D(code); the encoder wants its codes called real."""
    if _few_kernels(fake_logits):
        return F.softplus(-fake_logits).mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def accuracy_real_fake(real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """Fraction of prior samples called real and of codes called fake (tensors, no sync)."""
    return (real_logits > 0).float().mean(), (fake_logits < 0).float().mean()
