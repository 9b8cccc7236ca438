"""Priors p(z) that the adversarial phase pushes the codes towards.

A prior is any object with `sample(n, labels=None) -> Tensor` of shape (n, dim) and a `dim`
attribute; users may pass their own. `make_prior` builds the named ones from a config.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .errors import AAEError


class Prior(Protocol):
    dim: int

    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor: ...


class GaussianPrior:
    """Isotropic Gaussian N(0, std^2 I) in `dim` dimensions (the blog uses std 5 with dim 2)."""

    def __init__(self, dim: int, std: float = 1.0):
        if dim <= 0:
            raise AAEError(f"prior dimension {dim}: must be positive")
        if not std > 0:
            raise AAEError(f"prior std {std}: must be positive")
        self.dim, self.std = dim, float(std)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.dim, device=device) * self.std

    def __repr__(self) -> str:
        return f"GaussianPrior(dim={self.dim}, std={self.std})"


PRIORS = ("gaussian",)


def make_prior(name: str, dim: int, std: float) -> Prior:
    """Build a prior by name."""
    if name == "gaussian":
        return GaussianPrior(dim, std)
    raise AAEError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
