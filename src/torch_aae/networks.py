"""The networks of the paper's MNIST models: plain MLPs that return tensors.

Paper notation -> names here: q(z|x) = `Encoder`, p(x|z) = `Decoder`, the discriminator on the
code = `Discriminator` (used as `latent_discriminator`).
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z|x): x (batch, in_dim) -> deterministic code z (batch, z_dim), linear output."""

    def __init__(self, in_dim: int, z_dim: int, hidden: list[int], dropout: float = 0.2):
        super().__init__()
        self.net = mlp([in_dim, *hidden, z_dim], dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """p(x|z): z (batch, z_dim) -> pixel *logits* (batch, out_dim).

    ReLU follows every hidden layer (the blog's code forgot the last one). The output sigmoid is
    applied by the caller (`torch.sigmoid`), so the loss can use the stable BCE-with-logits.
    """

    def __init__(self, z_dim: int, out_dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.net = mlp([z_dim, *hidden, out_dim], dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """D(z): code (batch, z_dim) -> logit (batch,) that z was drawn from the prior."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.net = mlp([in_dim, *hidden, 1], dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)
