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


# ----------------------------------------------------------------------------------------------
# Label-conditioned generation (the supervised model): pure functions of the decoded grid


def conditional_accuracy(predicted: np.ndarray) -> dict[str, float]:
    """How often an image decoded with label k is classified as k.

    Args:
        predicted: (n, K) classes an evaluation classifier predicts for n codes, each decoded
            with every label k = 0..K-1 (column k was decoded with label k).
    Returns:
        conditional_accuracy: the fraction of the n * K images classified as their label.
    """
    predicted = np.asarray(predicted)
    return {"conditional_accuracy": float((predicted == np.arange(predicted.shape[1])).mean())}


STYLE_FEATURES = ("thickness", "slant")


def stroke_features(images: np.ndarray) -> np.ndarray:
    """Two simple handwriting-style features of grey images (n, h, w) in [0, 1].

    Returns:
        (n, 2): thickness = mean ink per pixel (thicker or larger strokes hold more ink);
        slant = -mu_xy / mu_yy, the ink's second central moments (x to the right, y down), i.e.
        how far the strokes lean right per row going up (0 for upright, > 0 leaning right).
    """
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape
    ink = images.sum(axis=(1, 2)) + 1e-9  # (n,)
    ys, xs = np.mgrid[0:h, 0:w]
    mean_x = (images * xs).sum(axis=(1, 2)) / ink
    mean_y = (images * ys).sum(axis=(1, 2)) / ink
    dx, dy = xs - mean_x[:, None, None], ys - mean_y[:, None, None]  # (n, h, w)
    mu_xy = (images * dx * dy).sum(axis=(1, 2)) / ink
    mu_yy = (images * dy * dy).sum(axis=(1, 2)) / ink + 1e-9
    return np.stack([ink / (h * w), -mu_xy / mu_yy], axis=1)


def style_consistency(features: np.ndarray, names=STYLE_FEATURES) -> dict[str, float]:
    """Whether a style grid keeps each row's style across its columns (the labels).

    For each feature, the Pearson correlation over the n rows between two columns, averaged over
    all pairs of columns: near 1 when a row that is thick (or slanted) in one label is so in every
    label, near 0 when rows are unrelated across labels (e.g., shuffled). A column whose feature
    is constant correlates 0 with the others.

    Args:
        features: (n, K, F) style features (e.g., `stroke_features`) of n codes x K labels.
    Returns:
        style_consistency (mean over features) and style_consistency_<name> per feature.
    """
    features = np.asarray(features, dtype=np.float64)
    n, k, _ = features.shape
    centred = features - features.mean(axis=0)
    std = centred.std(axis=0)  # (K, F)
    z = np.divide(centred, std, out=np.zeros_like(centred), where=std > 1e-12)
    out = {}
    for f, name in enumerate(names):
        corr = z[:, :, f].T @ z[:, :, f] / n  # (K, K)
        out[f"style_consistency_{name}"] = float(corr[~np.eye(k, dtype=bool)].mean())
    out = {"style_consistency": float(np.mean(list(out.values()))), **out}
    return out


# ----------------------------------------------------------------------------------------------
# Sample quality: pure functions of an evaluation classifier's outputs on samples and test images


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0
    from rounding are set to 0)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n, d) and (m, d):
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) (the FID formula, on any features).

    tr((C_a C_b)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix C_a^(1/2) C_b C_a^(1/2), which has the same eigenvalues, in float64.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: need (n, d) and (m, d) with n, m >= 2, got "
                         f"{a.shape} and {b.shape}")  # fmt: skip
    # (d, d); np.cov gives a 0-d array for d = 1
    cov_a, cov_b = (np.atleast_2d(np.cov(f, rowvar=False, ddof=1)) for f in (a, b))
    root_a = _sqrtm_psd(cov_a)
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    return max(0.0, mean_term + float(np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt))


def class_histogram(predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    """How evenly samples cover the classes an evaluation classifier assigns them.

    Args:
        predicted: (n,) predicted classes of n samples, in 0..n_classes-1.
    Returns:
        sample_class_<k>: the fraction of samples classified as k, for every k;
        sample_class_entropy: the entropy of these fractions / log(n_classes) (1 when uniform,
        0 when every sample is one class).
    """
    predicted = np.asarray(predicted).astype(np.int64)
    if n_classes < 2 or predicted.size == 0 or predicted.min() < 0 or predicted.max() >= n_classes:
        raise ValueError(f"class_histogram: need n_classes >= 2 and classes in 0..{n_classes - 1}")
    frac = np.bincount(predicted, minlength=n_classes) / predicted.size
    nonzero = frac[frac > 0]
    out = {f"sample_class_{k}": float(f) for k, f in enumerate(frac)}
    out["sample_class_entropy"] = float(-(nonzero * np.log(nonzero)).sum() / np.log(n_classes))
    return out
