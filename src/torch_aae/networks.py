"""The networks of the paper's MNIST models: plain MLPs that return tensors.

Paper notation -> names here: q(z|x) = `Encoder`, p(x|z) = `Decoder`, the discriminator on the
code = `Discriminator` (used as `latent_discriminator`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AAEError


class Dropout(nn.Module):
    """Inverted dropout, as `nn.Dropout`, with a cheaper mask on CPU: one uniform 64-bit random
    integer gives four units a uniform 16-bit draw each, compared with a threshold. On CPU this is
    several times faster than `nn.Dropout`'s `bernoulli_`, which shows in a step of 1000-unit
    layers. Each unit is dropped with probability round(p * 2^16) / 2^16 (p within 8e-6) and the
    kept ones are scaled by 1/(1-p). On CUDA it is `F.dropout`: one fused kernel each way, where
    the mask above takes five (a GPU step at batch 100 is bound by its kernel count)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise AAEError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.is_cuda:
            return F.dropout(x, self.p, training=True)
        return x * (_keep_mask(x, self.p) * (1.0 / (1.0 - self.p))).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def gaussian_noise(t: torch.Tensor, std: float) -> torch.Tensor:
    """t plus N(0, std^2) noise, drawn afresh (t itself where std is 0): the input noise of a
    denoising autoencoder, the code noise of a Gaussian posterior, instance noise."""
    return t + std * torch.randn_like(t) if std > 0 else t


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A bool mask shaped like x, each entry False with probability round(p * 2^16) / 2^16."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-2^15, 2^15)
    return draws >= round(p * 65536) - 32768


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; the last layer is linear."""
    if not all(isinstance(n, int) and n > 0 for n in sizes):
        raise AAEError(f"layer widths {sizes}: each must be a positive integer")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
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
