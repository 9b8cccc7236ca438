"""Random image transformations for the few labeled images (`--label-*`) and for the cluster
code's views (`--view-*`): shifts, stroke thickness, affine maps and elastic distortion. Each
works on flattened (batch, features) tensors on any device, draws from torch's global generator,
and uses the pixels' layout: a run with any of them is not permutation-invariant.
"""

from __future__ import annotations

import torch

from .errors import AAEError


def random_shift(x: torch.Tensor, image_shape: tuple[int, ...], max_shift: int) -> torch.Tensor:
    """Each image moved by its own random offset of -max_shift..max_shift pixels along each of
    its last two axes (uniform, independent), the uncovered border filled with 0: translation
    "noise" for a few labeled images. Not permutation-invariant: it uses the pixels' layout.

    Args:
        x: (batch, prod(image_shape)) flattened images.
        image_shape: (..., height, width) of one image.
    Returns:
        A new (batch, prod(image_shape)) tensor; x itself when max_shift is 0.
    """
    if max_shift < 0:
        raise AAEError(f"shift {max_shift}: must be >= 0")
    if max_shift == 0:
        return x
    if len(image_shape) < 2:
        raise AAEError(f"shift: the images must be 2-D, not of shape {tuple(image_shape)}")
    b, (h, w), k = len(x), image_shape[-2:], max_shift
    img = x.reshape(b, -1, h, w)  # (batch, channels, h, w)
    padded = torch.nn.functional.pad(img, (k, k, k, k))  # (batch, channels, h + 2k, w + 2k)
    dy = torch.randint(0, 2 * k + 1, (b, 1, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * k + 1, (b, 1, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1) + dy  # (batch, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w) + dx  # (batch, 1, 1, w)
    out = padded.gather(2, rows.expand(b, img.shape[1], h, w + 2 * k))
    return out.gather(3, cols.expand(b, img.shape[1], h, w)).reshape(b, -1)


def random_thickness(x: torch.Tensor, image_shape: tuple[int, ...], amount: float) -> torch.Tensor:
    """Each image's strokes thickened or thinned by its own random amount t, uniform in
    [-amount, amount] (at most 1): the image blended by |t| towards its 2x2 maximum filter (t > 0:
    strokes about a pixel wider; on MNIST 1.5 times the ink) or its 2x2 minimum filter (t < 0:
    about a pixel narrower; half the ink). Not permutation-invariant: it uses the pixels' layout.

    Args:
        x: (batch, prod(image_shape)) flattened images.
        image_shape: (..., height, width) of one image.
    Returns:
        A new (batch, prod(image_shape)) tensor; x itself when amount is 0.
    """
    if not 0 <= amount <= 1:
        raise AAEError(f"thickness {amount}: must be in [0, 1]")
    if amount == 0:
        return x
    if len(image_shape) < 2:
        raise AAEError(f"thickness: the images must be 2-D, not of shape {tuple(image_shape)}")
    b, (h, w) = len(x), image_shape[-2:]
    img = x.reshape(b, -1, h, w)  # (batch, channels, h, w)
    wider = torch.nn.functional.max_pool2d(torch.nn.functional.pad(img, (0, 1, 0, 1)), 2, 1)
    narrower = -torch.nn.functional.max_pool2d(torch.nn.functional.pad(-img, (0, 1, 0, 1)), 2, 1)
    t = (2 * torch.rand(b, 1, 1, 1, device=x.device, dtype=img.dtype) - 1) * amount
    out = img + t.abs() * (torch.where(t > 0, wider, narrower) - img)
    return out.reshape(b, -1)


def random_affine(x: torch.Tensor, image_shape: tuple[int, ...], rotate: float = 0.0,
                  scale: float = 0.0, shift: float = 0.0, elastic: float = 0.0,
                  elastic_sigma: float = 4.0) -> torch.Tensor:  # fmt: skip
    """Each image under its own random affine map: a rotation by an angle uniform in
    [-rotate, rotate] degrees, a zoom by a factor uniform in [1 - scale, 1 + scale] and a
    translation uniform in [-shift, shift] pixels along each axis (bilinear, zeros outside),
    then, with `elastic` > 0, an elastic distortion (`elastic_field`). Not permutation-invariant:
    it uses the pixels' layout. With no rotation, zoom or distortion it is `random_shift` (whole
    pixels, no interpolation).

    Args:
        x: (batch, prod(image_shape)) flattened images.
        image_shape: (..., height, width) of one image.
        elastic, elastic_sigma: the distortion's scale and smoothing, in pixels (Simard et al.
            2003 use 34 and 4 on MNIST).
    Returns:
        A new (batch, prod(image_shape)) tensor; x itself when every amount is 0.
    """
    for name, value in (("rotate", rotate), ("scale", scale), ("shift", shift), ("elastic", elastic)):
        if not value >= 0:
            raise AAEError(f"{name} {value}: must be >= 0")
    if scale >= 1:
        raise AAEError(f"scale {scale}: must be below 1 (a zoom factor of 1 - scale must stay positive)")
    if not elastic_sigma > 0:
        raise AAEError(f"elastic sigma {elastic_sigma}: must be > 0")
    if rotate == 0 and scale == 0 and elastic == 0:
        if shift != int(shift):
            raise AAEError(f"shift {shift}: a shift alone moves whole pixels")
        return random_shift(x, image_shape, int(shift))
    if len(image_shape) < 2:
        raise AAEError(f"affine: the images must be 2-D, not of shape {tuple(image_shape)}")
    b, (h, w) = len(x), image_shape[-2:]
    img = x.reshape(b, -1, h, w)  # (batch, channels, h, w)
    uniform = lambda *shape: 2 * torch.rand(*shape, device=x.device) - 1  # noqa: E731, U(-1, 1)
    angle = uniform(b) * rotate * torch.pi / 180
    zoom = 1 + uniform(b) * scale
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos, -sin, uniform(b) * shift * 2 / w], 1),
                         torch.stack([sin, cos, uniform(b) * shift * 2 / h], 1)], 1)  # (b, 2, 3)  # fmt: skip
    grid = torch.nn.functional.affine_grid(theta.to(img.dtype), list(img.shape), align_corners=False)
    if elastic:  # (b, h, w, 2) offsets in pixels, as (x, y); the grid's units are 2 / size
        field = elastic_field(b, h, w, elastic, elastic_sigma, x.device).to(img.dtype)
        # Python scales, not a tensor built from a list: that would copy from the host, which a
        # CUDA graph cannot capture.
        grid = grid + torch.stack((field[..., 0] * (2 / w), field[..., 1] * (2 / h)), -1)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False, padding_mode="zeros")
    return out.reshape(b, -1)


def elastic_field(batch: int, h: int, w: int, alpha: float, sigma: float, device=None) -> torch.Tensor:
    """Random elastic displacement fields (Simard, Steinkraus & Platt 2003): each pixel's offset
    along each axis drawn uniform in [-1, 1], smoothed by a Gaussian of std `sigma` pixels
    (reflected at the borders, truncated at 3 sigma or the image's size) and multiplied by
    `alpha`.

    Returns:
        (batch, h, w, 2) offsets in pixels, x (along w) first, as `grid_sample` orders them.
    """
    radius = max(1, min(int(3 * sigma + 0.5), h - 1, w - 1))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    noise = 2 * torch.rand(batch * 2, 1, h, w, device=device) - 1  # one map per axis
    f = torch.nn.functional
    smooth = f.conv2d(f.pad(noise, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    smooth = f.conv2d(f.pad(smooth, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return (alpha * smooth).view(batch, 2, h, w).permute(0, 2, 3, 1)
