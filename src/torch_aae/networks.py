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


def paired_discriminators(first: "Discriminator", second: "Discriminator", x1: torch.Tensor,
                          x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(first(x1), second(x2)) with one batched matrix product per layer for both, where the two
    networks' layers have the same shapes (`--paired-discriminators`): the weights are stacked
    and the two batches go through `torch.baddbmm` together. Layers before the first such pair
    (an input layer of another width) run apart. The same math as two calls, rounded as a
    batched product rounds; on a GPU, where a product at batch 100 occupies a few of the SMs,
    one batched product costs about what one plain product does.

    Networks of other structure (other depth or widths, dropout, other batch sizes) run apart, as
    two calls.
    """
    layers = list(zip(first.net, second.net))
    same_kinds = all(type(a) is type(b) and isinstance(a, (nn.Linear, nn.ReLU)) for a, b in layers)
    linears = [(a.weight.shape, b.weight.shape) for a, b in layers if isinstance(a, nn.Linear)]
    # The layers pair from the first Linear pair of one shape on, each later one of one shape too
    paired = next((i for i, (s, t) in enumerate(linears) if s == t), len(linears))
    if (len(first.net) != len(second.net) or not same_kinds or len(x1) != len(x2)
            or paired == len(linears) or any(s != t for s, t in linears[paired:])):  # fmt: skip
        return first(x1), second(x2)
    h1, h2, h = x1, x2, None  # h: both batches stacked, (2, batch, width), once paired
    for a, b in layers:
        if h is None and (isinstance(a, nn.ReLU) or a.weight.shape != b.weight.shape):  # not paired yet
            h1, h2 = a(h1), b(h2)
        else:
            if h is None:
                h = torch.stack([h1, h2])
            if isinstance(a, nn.Linear):
                weights = torch.stack([a.weight, b.weight]).transpose(1, 2)  # (2, in, out)
                h = torch.baddbmm(torch.stack([a.bias, b.bias]).unsqueeze(1), h, weights)
            else:
                h = a(h)
    return h[0].squeeze(1), h[1].squeeze(1)


class Discriminator(nn.Module):
    """D(z): code (batch, z_dim) -> logit (batch,) that z was drawn from the prior."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.net = mlp([in_dim, *hidden, 1], dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)
