"""Metrics: pure functions from arrays to dict[str, float], plus the code that collects codes."""

from __future__ import annotations

import numpy as np
import torch

from . import losses


def prior_match(codes: np.ndarray, prior_std: float) -> dict[str, float]:
    """How well codes (n, z_dim) match N(0, prior_std^2 I), per dimension.

    Returns:
        prior_mean_abs_max: the largest |mean| over dimensions;
        prior_std_ratio_min / _max: the smallest / largest std / prior_std over dimensions.
    """
    codes = np.asarray(codes, dtype=np.float64)
    ratio = codes.std(axis=0) / prior_std
    return {
        "prior_mean_abs_max": float(np.abs(codes.mean(axis=0)).max()),
        "prior_std_ratio_min": float(ratio.min()),
        "prior_std_ratio_max": float(ratio.max()),
    }


@torch.no_grad()
def collect(fn, x: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    """Apply `fn` to `x` in batches on `device`; results are concatenated on the CPU."""
    out = [fn(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def recon_bce(model, x: torch.Tensor, device, batch_size: int = 1000) -> float:
    """Mean per-pixel reconstruction BCE of `model.reconstruct_logits` on images `x`."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        total += float(losses.reconstruction_loss(model.reconstruct_logits(xb), xb)) * len(xb)
    return total / len(x)
