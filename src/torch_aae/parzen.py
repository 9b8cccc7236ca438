"""Gaussian Parzen-window log-likelihood of a generative model (Makhzani et al. 2015, Table 1).

The protocol is that of Goodfellow et al.'s GAN paper (`parzen_ll.py` in goodfeli/adversarial),
after Breuleux et al. (2011), which the AAE paper's Table 1 reuses:

1. draw 10,000 samples from the model (prior -> decoder, pixel means, not binarized);
2. fit an isotropic Gaussian Parzen window on them: p(x) = 1/N sum_i N(x; s_i, sigma^2 I);
3. choose sigma by grid search (`SIGMA_GRID` = 10 values log-spaced over [0.1, 1]) maximizing
   the mean log-likelihood of 1,000 validation images (`parzen_ll.py`'s `limit_size=1000`). It
   takes MNIST training images 50,000-50,999 (`validation_images`), held out from a GAN trained
   on the first 50,000. `aae evaluate --parzen` takes the first 1,000 images of the run's own
   validation split instead when it was trained with one (`--val-size` 1000 or more), so that
   they are held out here too (`parzen_val_held_out` 1.0); a run on all 60,000 images has seen
   images 50,000-50,999 in training (only sigma is chosen on them; the score is on the test set);
4. report the mean log-likelihood (nats) of the test images and its standard error std / sqrt(n).

Everything is a pure function of arrays. The squared distances of a batch of points to all samples
come from one matrix product (|x|^2 + |s|^2 - 2 x.s, in float64), and the log-sum-exp runs over
the samples, so 10,000 x 10,000 MNIST images take well under a minute on one CPU thread.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import AAEError


def log_grid(lo: float, hi: float, n) -> tuple[float, ...]:
    """`n` widths log-spaced over [lo, hi] (the Parzen window widths searched)."""
    if not math.isfinite(n) or n != int(n) or n < 1:
        raise AAEError(f"sigma grid: the number of widths must be a positive whole number, not {n}")
    if not 0 < lo <= hi or (n == 1 and lo != hi) or not math.isfinite(hi):
        raise AAEError(f"sigma grid: need 0 < lo <= hi (lo == hi for one width), got {lo}, {hi}")
    return tuple(float(s) for s in np.logspace(math.log10(lo), math.log10(hi), int(n)))


SIGMA_GRID = log_grid(0.1, 1.0, 10)  # parzen_ll.py's default grid
VAL_SIZE = 1000


def _as_float64(a) -> torch.Tensor:
    """A numpy array or tensor as a float64 CPU tensor: |x|^2 + |s|^2 - 2 x.s cancels badly
    in float32 for nearby points, exactly the ones that dominate the log-sum-exp."""
    if not isinstance(a, torch.Tensor):
        a = torch.from_numpy(np.asarray(a))
    return a.detach().to("cpu", torch.float64)


def squared_distances(x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m) between rows of x (n, d) and samples (m, d)."""
    sq = (x * x).sum(1, keepdim=True) + (samples * samples).sum(1) - 2.0 * x @ samples.T
    return sq.clamp_min_(0.0)  # rounding can make a zero distance slightly negative


def parzen_log_likelihoods(x, samples, sigmas, batch_size: int = 1000,
                           desc: str | None = None) -> np.ndarray:  # fmt: skip
    """Log-density of each point under the Parzen window of `samples`, for each width.

    Args:
        x: (n, d) points to score.
        samples: (m, d) the window's centres (model samples).
        sigmas: widths (k,) of the isotropic Gaussian kernel.
        batch_size: points per distance matrix (batch_size x m float64 values in memory).
        desc: with it, a progress bar of that name over the batches (shown on a terminal only).
    Returns:
        (k, n) float64: log (1/m sum_i N(x_j; s_i, sigma^2 I)) for each sigma and point.
    """
    x, samples = _as_float64(x), _as_float64(samples)
    sigmas = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if x.ndim != 2 or samples.ndim != 2 or x.shape[1] != samples.shape[1]:
        raise AAEError(f"Parzen: points {tuple(x.shape)} and samples {tuple(samples.shape)} "
                       "must be (n, d) and (m, d)")  # fmt: skip
    if len(samples) == 0 or (sigmas <= 0).any():
        raise AAEError(f"Parzen: need samples and positive widths (got {len(samples)}, {sigmas})")
    m, d = samples.shape
    out = np.empty((len(sigmas), len(x)))
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=None if desc else True):
        dist = squared_distances(x[start : start + batch_size], samples)  # (batch, m)
        for k, sigma in enumerate(sigmas):
            lse = torch.logsumexp(dist / (-2.0 * sigma**2), dim=1)  # (batch,)
            norm = math.log(m) + d * math.log(sigma * math.sqrt(2 * math.pi))
            out[k, start : start + len(dist)] = (lse - norm).numpy()
    return out


def validation_images(train_x, size: int = VAL_SIZE, last: int = 10000):
    """The Parzen validation set: the first `size` of the last `last` training images (for
    MNIST's 60,000: images 50,000 to 50,999, `parzen_ll.py`'s validation images)."""
    start = max(0, len(train_x) - last)
    if start + size > len(train_x):
        raise AAEError(f"Parzen: {size} validation images asked, the training set has "
                       f"{len(train_x)}")  # fmt: skip
    return train_x[start : start + size]


def select_sigma(val, samples, sigmas=SIGMA_GRID, batch_size: int = 1000,
                 progress: bool = False) -> tuple[float, dict]:  # fmt: skip
    """The width of `sigmas` with the highest mean log-likelihood of `val` (v, d).

    Returns:
        The chosen sigma, and {sigma: mean validation log-likelihood} for every width.
    """
    sigmas = [float(s) for s in sigmas]
    desc = "parzen: validation" if progress else None
    val_ll = parzen_log_likelihoods(val, samples, sigmas, batch_size, desc).mean(axis=1)  # (k,)
    return sigmas[int(np.argmax(val_ll))], dict(zip(sigmas, val_ll.tolist()))


def parzen_evaluate(samples, test, val, sigmas=SIGMA_GRID, batch_size: int = 1000,
                    progress: bool = False) -> dict:  # fmt: skip
    """The full protocol: choose sigma on `val`, then score `test`.

    Args:
        samples: (m, d) model samples, the window's centres.
        test: (n, d) test images; val: (v, d) validation images.
        sigmas: the grid of widths searched.
        progress: progress bars over the batches (on a terminal only).
    Returns:
        parzen_ll (mean test log-likelihood, nats), parzen_se (its standard error,
        std / sqrt(n)), parzen_sigma (the chosen width), parzen_val_ll (the validation mean at
        it), parzen_sigma_at_edge (1.0 when the choice is the grid's first or last width, so the
        grid may be too narrow), parzen_n_samples, parzen_n_val, and parzen_grid_lo,
        parzen_grid_hi and parzen_grid_n (the grid's smallest and largest width and its size).
    """
    sigma, curve = select_sigma(val, samples, sigmas, batch_size, progress)
    desc = "parzen: test" if progress else None
    test_ll = parzen_log_likelihoods(test, samples, [sigma], batch_size, desc)[0]  # (n,)
    grid = sorted(curve)
    return {
        "parzen_ll": float(test_ll.mean()),
        "parzen_se": float(test_ll.std() / math.sqrt(len(test_ll))),
        "parzen_sigma": sigma,
        "parzen_val_ll": float(curve[sigma]),
        "parzen_sigma_at_edge": float(len(grid) > 1 and sigma in (grid[0], grid[-1])),
        "parzen_n_samples": float(len(samples)),
        "parzen_n_val": float(len(val)),
        "parzen_grid_lo": grid[0],
        "parzen_grid_hi": grid[-1],
        "parzen_grid_n": float(len(grid)),
    }

