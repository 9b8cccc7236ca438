"""What the plots draw: class colours that no prior sample shares, rows named by cluster."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from torch_aae import plots


@pytest.mark.parametrize("k", [2, 10, 16, 20, 30])
def test_class_colours_are_distinct_and_none_is_the_priors_grey(k):
    colours = [to_rgb(c) for c in plots.class_colours(k)]
    assert len(colours) == k and len(set(colours)) == k
    # A grey has equal channels; black (0, 0, 0) stands out from the light grey prior.
    greys = [c for c in colours if max(c) - min(c) < 0.05 and max(c) > 0.1]
    assert greys == []
    assert to_rgb(plots.PRIOR_COLOUR) not in colours


def test_the_scatter_colour_bar_has_a_tick_in_the_middle_of_each_class_band(tmp_path, monkeypatch):
    bars = []
    original = plots.Figure.colorbar

    def spy(fig, mappable, **kw):
        bars.append((mappable.norm, kw.get("ticks")))
        return original(fig, mappable, **kw)

    monkeypatch.setattr(plots.Figure, "colorbar", spy)
    labels = np.arange(300) % 10
    plots.save_latent_scatter(np.random.default_rng(0).normal(size=(300, 2)), labels, tmp_path / "l.png")
    norm, ticks = bars[0]
    assert list(ticks) == list(range(10))
    assert list(norm.boundaries) == [k - 0.5 for k in range(11)]  # class k's band: [k - 0.5, k + 0.5]
    assert (tmp_path / "l.png").is_file()


def test_image_rows_are_named(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: calls.append([t.get_text() for t in fig.axes[0].get_yticklabels()]))
    plots.save_image_rows(np.zeros((3 * 4, 16)), (4, 4), ["0: 5", "2: 7", "3: 1"], tmp_path / "r.png")
    assert calls == [["0: 5", "2: 7", "3: 1"]]


def test_importing_the_package_leaves_matplotlibs_backend_alone():
    # A notebook's inline backend must survive `import torch_aae` (it was forced to Agg).
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import torch_aae, torch_aae.plots, torch_aae.report; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_loss_curves_are_the_same_from_training_and_from_metrics_jsonl(tmp_path):
    # Training passes its history in the order the step logs; `aae plot` reads metrics.jsonl,
    # whose keys are sorted: the panels and their lines must not depend on it.
    from torch_aae import plots

    row = {"epoch": 1, "loss/recon": 0.2, "loss/disc": 0.7, "acc/disc_real": 0.6, "eval/val_error": 0.1,
           "time/epoch_seconds": 3.0}  # fmt: skip
    rows = [dict(row, epoch=e) for e in (1, 2, 3)]
    plots.save_loss_curves(rows, tmp_path / "a.png")
    plots.save_loss_curves([dict(sorted(r.items())) for r in rows], tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_plot_stopped_while_written_leaves_the_previous_image(tmp_path, monkeypatch):
    """Plots were rendered straight into their file: a run killed in savefig left a truncated
    PNG, which `aae report` then embedded."""
    from matplotlib.figure import Figure

    path = tmp_path / "plots" / "samples.png"
    images = np.random.default_rng(0).random((4, 16)).astype(np.float32)
    plots.save_image_grid(images, (4, 4), 2, path, "before")
    before = path.read_bytes()
    real = Figure.savefig

    def killed(self, fname, **kwargs):
        real(self, fname, **kwargs)
        if hasattr(fname, "truncate"):
            fname.truncate(100)
        else:
            open(fname, "r+b").truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        plots.save_image_grid(images, (4, 4), 2, path, "after")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["samples.png"]


def test_image_grid_tiles_the_images_row_by_row_and_fills_the_rest_white():
    images = np.arange(5, dtype=np.float32)[:, None].repeat(4, 1) / 10  # image i: all pixels i / 10
    grid = plots.image_grid(images, (2, 2), nrow=2)  # 3 columns
    assert grid.shape == (4, 6)
    tiles = [[grid[r * 2 : r * 2 + 2, c * 2 : c * 2 + 2] for c in range(3)] for r in range(2)]
    for i in range(5):
        r, c = divmod(i, 3)
        assert (tiles[r][c] == i / 10).all(), i
    assert (tiles[1][2] == 1).all()  # no sixth image
    flat = plots.image_grid(np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), (3,), nrow=2)  # vectors: a row each
    assert np.allclose(flat, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])


def test_image_rows_put_each_label_in_the_middle_of_its_row(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig))
    images = np.repeat(np.array([0.0, 0.5, 1.0]), 2)[:, None].repeat(16, 1)  # rows of 2 images, 0, 0.5, 1
    plots.save_image_rows(images, (4, 4), ["0: 5", "2: 7", "3: 1"], tmp_path / "r.png")
    ax = figs[0].axes[0]
    shown = ax.images[0].get_array()
    assert [float(shown[4 * r : 4 * r + 4].mean()) for r in range(3)] == [0.0, 0.5, 1.0]  # a row per label
    assert list(ax.get_yticks()) == pytest.approx([1.5, 5.5, 9.5], abs=0.6)  # each 4-pixel row's middle


def test_pca_2d_projects_the_centred_codes_on_their_two_widest_directions():
    u, v = np.array([1.0, -1, 1, -1, 1, -1, 1, -1]), np.array([1.0, 1, -1, -1, 1, 1, -1, -1])
    w = np.array([1.0, 1, 1, 1, -1, -1, -1, -1])
    along = np.stack([5 * u, 2 * v, 0.5 * w], 1)  # centred, uncorrelated: widest along axis 0, then 1
    codes = along + [10.0, -20.0, 30.0]
    xy = plots.pca_2d(codes)
    assert np.allclose(xy.mean(0), 0, atol=1e-9)  # centred: no offset in the scatter's axes
    assert np.allclose(np.abs(xy), np.abs(along[:, :2]), atol=1e-9)  # each direction up to its sign
    assert np.array_equal(plots.pca_2d(codes[:, :2]), codes[:, :2])  # 2-D codes as they are


def test_confusion_colours_each_row_by_its_fractions_off_the_diagonal(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig))
    counts = np.array([[5, 3, 2], [0, 10, 0], [4, 0, 6]])
    plots.save_confusion(counts, tmp_path / "c.png", "test")
    ax = figs[0].axes[0]
    shown = np.asarray(ax.images[0].get_array())
    assert np.allclose(shown, [[0, 0.3, 0.2], [0, 0, 0], [0.4, 0, 0]])  # of each true class's 10
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(c) for c in counts.flatten() if c)
