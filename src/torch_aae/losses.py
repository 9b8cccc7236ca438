"""Pure loss functions. Discriminators output logits: "real" = drawn from the prior = 1,
"fake" = produced by the encoder = 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy between decoder logits and images in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logits, x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(prior sample) - log(1 - D(code)), averaged over both halves."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log D(code); the encoder wants its codes called real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def accuracy_real_fake(real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """Fraction of prior samples called real and of codes called fake (tensors, no sync)."""
    return (real_logits > 0).float().mean(), (fake_logits < 0).float().mean()
