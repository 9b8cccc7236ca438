"""Random image transformations (torch_aae.augment): shift, affine, elastic, thickness."""

from __future__ import annotations

import math

import pytest
import torch

from torch_aae import augment as A
from torch_aae.errors import AAEError


def test_random_shift_moves_each_image_by_at_most_k_pixels_with_zero_fill():
    torch.manual_seed(0)
    x = torch.zeros(400, 784)
    x.view(400, 28, 28)[:, 10, 12] = 1  # one lit pixel
    moved = A.random_shift(x, (28, 28), 2).view(400, 28, 28).nonzero()
    assert len(moved) == 400  # one lit pixel per image still
    assert set((moved[:, 1] - 10).tolist()) == set((moved[:, 2] - 12).tolist()) == {-2, -1, 0, 1, 2}
    # A whole image: a translated copy, with zeros where nothing was moved in.
    img = torch.rand(1, 784)
    out = A.random_shift(img, (28, 28), 3).view(28, 28)
    src = img.view(28, 28)
    matches = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
               if torch.equal(out, torch.roll(src, (dy, dx), (0, 1)) * _inside(dy, dx))]  # fmt: skip
    assert len(matches) == 1


def _inside(dy: int, dx: int) -> torch.Tensor:
    """The 28x28 mask of the pixels a shift by (dy, dx) fills from the image (not from the border)."""
    rows = torch.arange(28).view(28, 1) - dy
    cols = torch.arange(28).view(1, 28) - dx
    return ((rows >= 0) & (rows < 28) & (cols >= 0) & (cols < 28)).float()


def test_random_shift_zero_is_the_identity_and_bad_input_is_refused():
    x = torch.rand(2, 784)
    assert A.random_shift(x, (28, 28), 0) is x
    with pytest.raises(AAEError, match="must be >= 0"):
        A.random_shift(x, (28, 28), -1)
    with pytest.raises(AAEError, match="must be 2-D"):
        A.random_shift(x, (784,), 1)


def _disc(radius: float) -> torch.Tensor:
    """A 28x28 image of a centred disc, flattened (1, 784)."""
    yy, xx = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    return ((yy**2 + xx**2) <= radius**2).float().view(1, 784)


def test_random_affine_rotation_leaves_a_centred_round_blob_as_it_is():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    blob = torch.exp(-(yy**2 + xx**2) / 32).view(1, 784).expand(50, 784)
    out = A.random_affine(blob, (28, 28), rotate=90)
    assert (out - blob).abs().max() < 0.02  # bilinear interpolation error only
    tilted = A.random_affine(_disc(8) * (xx.reshape(1, 784) > 0), (28, 28), rotate=90)
    assert not torch.allclose(tilted, _disc(8) * (xx.reshape(1, 784) > 0), atol=0.1)  # a half disc turns


def test_random_affine_zoom_scales_the_ink_by_the_square_of_the_factor():
    torch.manual_seed(0)
    disc = _disc(6).expand(200, 784)
    ratio = A.random_affine(disc, (28, 28), scale=0.3).sum(1) / disc.sum(1)
    assert ratio.min() > 0.7**2 * 0.9 and ratio.max() < 1.3**2 * 1.1
    assert ratio.max() - ratio.min() > 0.5  # the zoom factors differ from image to image


def test_elastic_field_is_smooth_scaled_by_alpha_and_reproducible():
    torch.manual_seed(3)
    f = A.elastic_field(400, 28, 28, alpha=1.0, sigma=4.0)
    assert f.shape == (400, 28, 28, 2)
    torch.manual_seed(3)
    assert torch.allclose(A.elastic_field(400, 28, 28, alpha=34.0, sigma=4.0), 34 * f, atol=1e-5)
    # Neighbouring offsets move together (a smooth field); unsmoothed noise would not.
    near = torch.corrcoef(torch.stack([f[:, 10:20, 10, 0].flatten(), f[:, 10:20, 11, 0].flatten()]))[0, 1]
    far = torch.corrcoef(torch.stack([f[:, 10:20, 2, 0].flatten(), f[:, 10:20, 25, 0].flatten()]))[0, 1]
    assert near > 0.9 and abs(far) < 0.2
    # The two axes are drawn apart.
    assert abs(torch.corrcoef(torch.stack([f[..., 0].flatten(), f[..., 1].flatten()]))[0, 1]) < 0.05
    rough = A.elastic_field(400, 28, 28, alpha=1.0, sigma=0.5)
    assert rough.std() > 2 * f.std()  # less smoothing averages less of the noise away


def test_random_affine_elastic_distorts_each_image_and_keeps_its_ink():
    torch.manual_seed(0)
    disc = _disc(6).expand(100, 784)
    out = A.random_affine(disc, (28, 28), elastic=34.0)
    moved = (out - disc).abs().sum(1)
    assert moved.min() > 1.0 and moved.std() > 0.1  # every image changed, each its own way
    ratio = out.sum(1) / disc.sum(1)
    # Warped, not erased or smeared over the image: a field stretches some discs, squeezes others.
    assert 0.9 < ratio.mean() < 1.1 and ratio.min() > 0.3 and ratio.max() < 1.7
    with pytest.raises(AAEError, match="elastic -1.0: must be >= 0"):
        A.random_affine(disc, (28, 28), elastic=-1.0)
    with pytest.raises(AAEError, match="elastic sigma 0: must be > 0"):
        A.random_affine(disc, (28, 28), elastic=1.0, elastic_sigma=0)


def test_random_affine_without_rotation_or_zoom_is_the_whole_pixel_shift():
    x = torch.rand(3, 784)
    assert A.random_affine(x, (28, 28)) is x
    torch.manual_seed(5)
    a = A.random_affine(x, (28, 28), shift=2)
    torch.manual_seed(5)
    assert torch.equal(a, A.random_shift(x, (28, 28), 2))
    for kw, message in ((dict(scale=1.0), "must be below 1"), (dict(rotate=-1.0), "must be >= 0"),
                        (dict(shift=1.5), "moves whole pixels")):  # fmt: skip
        with pytest.raises(AAEError, match=message):
            A.random_affine(x, (28, 28), **kw)


def test_random_thickness_widens_or_narrows_a_bar_by_its_amount():
    bar = torch.zeros(1, 8, 8)
    bar[:, 2:6, 3:5] = 1  # a vertical bar 2 pixels wide, 4 high
    x = bar.reshape(1, 64).repeat(400, 1)
    torch.manual_seed(0)
    out = A.random_thickness(x, (8, 8), 1.0)
    ink = out.sum(1)
    # Fully wider: 3 x 5 = 15 pixels; fully narrower: 1 x 3 = 3; in between, linear in |t|.
    assert ink.max() <= 15 + 1e-5 and ink.min() >= 3 - 1e-5
    assert (ink > 8).float().mean().item() == pytest.approx(0.5, abs=0.1)  # t > 0 half the time
    assert ink.max() > 14 and ink.min() < 4  # amounts reach both ends
    assert torch.equal(out.reshape(400, 8, 8)[:, 2:5, 3], torch.ones(400, 3))  # the core stays
    torch.manual_seed(0)
    half = A.random_thickness(x, (8, 8), 0.5).sum(1)
    assert half.max() <= 8 + 0.5 * 7 + 1e-5 and half.min() >= 8 - 0.5 * 5 - 1e-5
    assert A.random_thickness(x, (8, 8), 0.0) is x
    with pytest.raises(AAEError, match="must be in"):
        A.random_thickness(x, (8, 8), 1.5)


def _moments(images: torch.Tensor):
    """The ink's centre (x, y) and principal-axis angle in degrees of images (n, 784), 28x28."""
    img = images.view(-1, 28, 28)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ink = img.sum((1, 2))
    mx, my = (img * xs).sum((1, 2)) / ink, (img * ys).sum((1, 2)) / ink
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    mxx, myy, mxy = ((img * a * b).sum((1, 2)) / ink for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    return mx, my, torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy))


def test_random_affine_rotates_by_angles_spread_over_plus_minus_rotate_degrees():
    # A centred horizontal bar: its principal axis turns by the drawn angle, uniform in
    # [-30, 30] degrees (a rotation of half the amount, or in radians, would miss the ends).
    bar = torch.zeros(28, 28)
    bar[13:15, 4:24] = 1
    torch.manual_seed(0)
    _, _, angle = _moments(A.random_affine(bar.view(1, 784).expand(400, 784), (28, 28), rotate=30.0))
    assert angle.abs().max() < 30.5 and angle.min() < -28 and angle.max() > 28
    assert angle.abs().mean().item() == pytest.approx(15, abs=1.5)  # uniform: mean |angle| is half the range


def test_random_affine_zooms_by_factors_spread_over_1_plus_minus_scale():
    torch.manual_seed(0)
    disc = _disc(6).expand(400, 784)
    factor = (A.random_affine(disc, (28, 28), scale=0.3).sum(1) / disc.sum(1)).sqrt()  # ink ~ factor^2
    assert factor.min() > 0.68 and factor.max() < 1.32
    assert factor.min() < 0.72 and factor.max() > 1.28  # both ends of [0.7, 1.3] reached


def test_random_affine_shifts_each_axis_by_up_to_shift_pixels():
    # With a rotation (of next to nothing) the shift is the affine map's, in fractions of a pixel:
    # the disc's centre moves by an offset uniform in [-3, 3] along each axis, drawn apart.
    torch.manual_seed(0)
    mx, my, _ = _moments(A.random_affine(_disc(6).expand(400, 784), (28, 28), rotate=1e-6, shift=3.0))
    for offset in (mx - 13.5, my - 13.5):
        assert offset.abs().max() < 3.05 and offset.min() < -2.8 and offset.max() > 2.8
    assert abs(torch.corrcoef(torch.stack([mx, my]))[0, 1]) < 0.15


def test_random_affine_moves_each_pixel_by_the_elastic_field_in_pixels(monkeypatch):
    # A field of (2, -1) pixels everywhere: each output pixel (i, j) reads the image at
    # (i - 1, j + 2), exactly (whole pixels), zeros from outside; the field gets elastic and sigma.
    calls = []

    def constant_field(batch, h, w, alpha, sigma, device=None):
        calls.append((batch, h, w, alpha, sigma))
        return torch.tensor([2.0, -1.0]).expand(batch, h, w, 2)

    monkeypatch.setattr(A, "elastic_field", constant_field)
    x = torch.rand(3, 784)
    out = A.random_affine(x, (28, 28), elastic=34.0, elastic_sigma=3.0).view(3, 28, 28)
    assert calls == [(3, 28, 28, 34.0, 3.0)]
    expected = torch.zeros(3, 28, 28)
    expected[:, 1:, :-2] = x.view(3, 28, 28)[:, :-1, 2:]
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_elastic_field_is_smoothed_by_a_gaussian_of_std_sigma(sigma):
    # Gaussian-smoothed white noise correlates exp(-d^2 / (4 sigma^2)) at a lag of d pixels.
    torch.manual_seed(0)
    f = A.elastic_field(400, 28, 28, 1.0, sigma)
    lagged = torch.corrcoef(torch.stack([f[:, :, 10:14, 0].flatten(), f[:, :, 14:18, 0].flatten()]))[0, 1]
    assert lagged.item() == pytest.approx(math.exp(-16 / (4 * sigma**2)), abs=0.05)
