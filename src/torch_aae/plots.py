"""Plots written as PNG files. Figures are built without pyplot: importing torch_aae leaves
matplotlib's backend (a notebook's inline one, say) as it was, and no figure stays open."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, squeeze: bool = True):
    """pyplot.subplots without pyplot: a Figure of its own, which savefig renders with Agg."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def image_grid(images: np.ndarray, image_shape, nrow: int) -> np.ndarray:
    """Tile images (n, features) into one (nrow*h, ncol*w) array, row by row."""
    if len(image_shape) == 1:  # flat vectors (a .npz of shape (n, d)): one row of pixels each
        image_shape = (1, image_shape[0])
    images = np.asarray(images).reshape(len(images), *image_shape[-2:])
    n, h, w = images.shape
    ncol = -(-n // nrow)
    grid = np.ones((nrow * h, ncol * w), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid


def save_image_grid(images, image_shape, nrow: int, path: Path, title: str | None = None):
    grid = image_grid(images, image_shape, nrow)
    fig, ax = subplots(figsize=(grid.shape[1] / 56 + 0.5, grid.shape[0] / 56 + 0.8))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    _save(fig, path)


def save_image_rows(images, image_shape, row_labels: list[str], path: Path, title: str | None = None):
    """Images (rows * per_row, features) tiled one row per label, each row named on the left
    (e.g. "cluster: size")."""
    nrow = len(row_labels)
    grid = image_grid(images, image_shape, nrow)
    # At least 3 inches high: the axis label below is longer than a few rows of images.
    fig, ax = subplots(figsize=(grid.shape[1] / 56 + 1.5, max(grid.shape[0] / 56 + 0.8, 3.0)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    height = grid.shape[0] / nrow
    ax.set_yticks([height * (i + 0.5) for i in range(nrow)], row_labels, fontsize=8)
    ax.set_xticks([])
    ax.set_ylabel("cluster: training images it holds")
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def pca_2d(codes: np.ndarray) -> np.ndarray:
    """Project codes (n, d) on their first two principal components (identity for d = 2)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.shape[1] == 1:  # 1-D codes: spread them on a line at y = 0
        return np.concatenate([codes, np.zeros_like(codes)], axis=1)
    if codes.shape[1] == 2:
        return codes
    centred = codes - codes.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def save_latent_scatter(codes, labels, path: Path, title: str = "test codes", prior=None,
                        axis_name: str = "code"):  # fmt: skip
    """Scatter of codes (2-D, or their first two principal components) coloured by label.

    Args:
        axis_name: what the axes are dimensions of ("code"; "representation" for W'y + z).
        prior: optional (samples (m, 2), labels (m,) or None) of a 2-D prior, drawn faintly in
            grey behind the codes, so one can see whether the codes fill it; with labels (a
            prior conditioned on them), a first panel shows the samples coloured by label.
    """
    panels = 2 if prior is not None and prior[1] is not None else 1
    fig, axes = subplots(1, panels, figsize=(7 * panels, 6), squeeze=False)
    ax = axes[0, -1]
    if prior is not None:  # light grey, a colour no class has (see class_colours)
        ax.scatter(prior[0][:, 0], prior[0][:, 1], s=1, c=PRIOR_COLOUR, label="prior samples")
    principal = np.asarray(codes).shape[1] > 2
    if panels == 2:
        _scatter(axes[0, 0], fig, prior[0], prior[1], "prior samples of each class's part", False)
    _scatter(ax, fig, pca_2d(codes), labels,
             title + (" (first two principal components)" if principal else ""), principal, axis_name)
    if prior is not None:
        ax.legend(loc="upper right", fontsize=8, markerscale=5)
    if panels == 2:  # both panels over the same square, so that the two can be compared
        lo = min(min(a.get_xlim()[0], a.get_ylim()[0]) for a in axes[0])
        hi = max(max(a.get_xlim()[1], a.get_ylim()[1]) for a in axes[0])
        for a in axes[0]:
            a.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", adjustable="box")
    _save(fig, path)


PRIOR_COLOUR = "#d0d0d0"


def class_colours(k: int) -> list:
    """k distinct colours for classes 0..k-1, none of them grey (the prior's): tab10 with its
    grey replaced by black, tab20 with its greys replaced likewise, else a rainbow."""
    if k <= 10:
        colours = list(matplotlib.colormaps["tab10"].colors)
        colours[7] = "#000000"
    elif k <= 20:
        colours = list(matplotlib.colormaps["tab20"].colors)
        colours[14], colours[15] = "#000000", "#555500"
    else:
        colours = [matplotlib.colormaps["hsv"](i / k) for i in range(k)]
    return colours[:k]


def _scatter(ax, fig, xy, labels, title, principal: bool, axis_name: str = "code"):
    from matplotlib.colors import BoundaryNorm, ListedColormap

    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.5)
    else:
        k = int(np.max(labels)) + 1
        norm = BoundaryNorm(np.arange(k + 1) - 0.5, k)  # one band per class, its tick in the middle
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=ListedColormap(class_colours(k)), norm=norm,
                        s=2, alpha=0.6)  # fmt: skip
        fig.colorbar(sc, ax=ax, ticks=np.unique(labels), label="class")
    ax.set_title(title)
    ax.set_xlabel("first principal component" if principal else f"{axis_name} dimension 1")
    ax.set_ylabel("second principal component" if principal else f"{axis_name} dimension 2")
    ax.set_aspect("equal", adjustable="datalim")


def save_confusion(counts: np.ndarray, path: Path, title: str):
    """A confusion matrix (true class in rows, predicted in columns) as a heat map of each row's
    fractions, with the counts written in the cells; the diagonal is left out of the colour
    scale, so that the errors show."""
    counts = np.asarray(counts)
    k = len(counts)
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    off = np.where(np.eye(k, dtype=bool), 0.0, fractions)
    fig, ax = subplots(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
    top = max(off.max(), 1e-9)
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=top)
    for (i, j), c in np.ndenumerate(counts):
        if c:
            colour = "grey" if i == j else "white" if off[i, j] > 0.6 * top else "black"
            ax.text(j, i, str(c), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of the true class (off the diagonal)")
    _save(fig, path)


def save_loss_curves(history: list[dict], path: Path):
    """One panel per metric family (loss/, acc/, eval/) against the epoch."""
    families = {}
    order = ("loss", "acc", "eval", "time")  # the same panels whether history comes from training
    for key in history[0] if history else []:  # or from metrics.jsonl, whose keys are sorted
        if "/" in key:
            families.setdefault(key.split("/")[0], []).append(key)
    families = {family: sorted(keys) for family, keys in
                sorted(families.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))}  # fmt: skip
    fig, axes = subplots(1, max(len(families), 1), figsize=(5 * max(len(families), 1), 4))
    axes = np.atleast_1d(axes)
    epochs = [h["epoch"] for h in history]
    names = {"loss": "loss", "acc": "accuracy", "eval": "evaluation", "time": "seconds"}
    for ax, (family, keys) in zip(axes, families.items()):
        for key in keys:
            ax.plot(epochs, [h.get(key, np.nan) for h in history], label=key, marker=".")
        ax.set_xlabel("epoch")
        ax.set_ylabel(names.get(family, family))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs
        ax.set_title(family)
        ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig, path: Path):
    """Render `fig` in the format of `path`'s suffix and write it atomically (a run killed while
    plotting leaves the previous image, not a truncated one that `aae report` would embed)."""
    from .checkpoint import atomic_write_bytes

    path = Path(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format=path.suffix[1:].lower() or "png")
    atomic_write_bytes(path, buffer.getvalue())
