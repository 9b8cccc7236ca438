"""Priors p(z) that the adversarial phase pushes the codes towards (paper Fig. 2 and 4).

A prior is any object with `sample(n, labels=None) -> Tensor` of shape (n, dim) and a `dim`
attribute; users may pass their own. Priors made of K parts (the mixture's components, the swiss
roll's segments, the categorical's classes) also have `num_classes`; given `labels` (n,) with
values 0..K-1 they sample each row from that label's part, and label -1 ("no label") from the
whole prior. That is what the label-conditioned prior of section 2.3 needs. `make_prior` builds
the named ones.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import AAEError


class Prior(Protocol):
    dim: int

    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor: ...


def check_prior(prior, z_dim: int, conditioned: bool = False) -> None:
    """Refuse a custom prior without `sample(n, labels=None)` (its `labels` argument is needed
    when `conditioned`) or whose `dim` is not the model's z_dim (what its samples are then is
    checked where they are drawn, in `sample_on`)."""
    if not callable(getattr(prior, "sample", None)):
        raise AAEError(f"prior {prior!r}: no sample(n, labels=None) method")
    if getattr(prior, "dim", None) != z_dim:
        raise AAEError(f"prior {prior!r}: dim {getattr(prior, 'dim', None)}, the model's z_dim {z_dim}")
    if conditioned and not _takes(prior.sample, "labels"):
        raise AAEError(f"prior {prior!r}: its sample(n) takes no labels, which conditioning on "
                       "labels passes (sample(n, labels=None): row i from part labels[i], -1: any)")  # fmt: skip


def _takes(method, name: str) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # no inspectable signature: let it be tried
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class GaussianPrior:
    """Isotropic Gaussian N(0, std^2 I) in `dim` dimensions (the blog uses std 5 with dim 2)."""

    def __init__(self, dim: int, std: float = 1.0):
        _check_positive(dim=dim, std=std)
        self.dim, self.std = dim, float(std)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.dim, device=device) * self.std

    def __repr__(self) -> str:
        return f"GaussianPrior(dim={self.dim}, std={self.std})"


class MixturePrior:
    """K Gaussians in 2-D whose means sit on a circle of `radius`, component k at angle 2 pi k / K.

    Each component is elongated along its radius (std `std_along`) and thin across it
    (`std_across`), as in the re-implementations of the paper's Fig. 4 (std 0.5 / 0.05, radius
    1.4): ten petals around the origin.
    """

    def __init__(self, num_classes: int = 10, radius: float = 1.4, std_along: float = 0.5,
                 std_across: float = 0.05):  # fmt: skip
        _check_positive(num_classes=num_classes, radius=radius, std_along=std_along,
                        std_across=std_across)  # fmt: skip
        self.dim, self.num_classes = 2, int(num_classes)
        self.radius, self.std_along = float(radius), float(std_along)
        self.std_across = float(std_across)

    def directions(self, k: torch.Tensor) -> torch.Tensor:
        """Unit vectors (n, 2) pointing from the origin to the means of components k (n,)."""
        angle = 2 * math.pi * k.float() / self.num_classes
        return torch.stack([angle.cos(), angle.sin()], 1)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        k = _parts(n, labels, self.num_classes, device)  # (n,) component of each row
        radial = self.directions(k)  # (n, 2)
        tangent = torch.stack([-radial[:, 1], radial[:, 0]], 1)  # (n, 2)
        along = self.radius + self.std_along * torch.randn(n, 1, device=radial.device)
        across = self.std_across * torch.randn(n, 1, device=radial.device)
        return along * radial + across * tangent

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """The component (n,) whose mean direction is closest in angle to each point z (n, 2)."""
        angle = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
        return (angle / (2 * math.pi / self.num_classes)).round().long() % self.num_classes

    def __repr__(self) -> str:
        return (f"MixturePrior(num_classes={self.num_classes}, radius={self.radius}, "
                f"std_along={self.std_along}, std_across={self.std_across})")  # fmt: skip


class SwissRollPrior:
    """A 2-D spiral: r = radius sqrt(u), theta = 2 pi turns sqrt(u), u ~ U(0, 1) (the
    re-implementations' r = 3 sqrt(u), theta = 4 pi sqrt(u)). Segment k of K holds
    u in [k / K, (k + 1) / K): equal probability, consecutive along the roll. `width` adds
    N(0, width^2 I) to each point, a roll of some thickness (0: the bare curve, which an encoder
    can hardly land on and a discriminator tells apart at once)."""

    def __init__(self, num_classes: int = 10, radius: float = 3.0, turns: float = 2.0,
                 width: float = 0.0):  # fmt: skip
        _check_positive(num_classes=num_classes, radius=radius, turns=turns)
        if not (width >= 0 and math.isfinite(width)):
            raise AAEError(f"swiss roll width {width}: must be >= 0 and finite")
        if width:
            _check_positive(width=width)
        self.dim, self.num_classes = 2, int(num_classes)
        self.radius, self.turns, self.width = float(radius), float(turns), float(width)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        k = _parts(n, labels, self.num_classes, device)  # (n,) segment of each row
        u = (k + torch.rand(n, device=k.device)) / self.num_classes  # (n,) in the segment
        r, theta = self.radius * u.sqrt(), 2 * math.pi * self.turns * u.sqrt()
        z = torch.stack([r * theta.cos(), r * theta.sin()], 1)
        return z + self.width * torch.randn_like(z) if self.width > 0 else z

    def assign(self, z: torch.Tensor, grid: int = 4096) -> torch.Tensor:
        """The segment (n,) of each point z (n, 2): that of the nearest of `grid` points along
        the curve (a point of a roll with width lies off the curve)."""
        u = (torch.arange(grid, dtype=z.dtype, device=z.device) + 0.5) / grid  # (grid,)
        r, theta = self.radius * u.sqrt(), 2 * math.pi * self.turns * u.sqrt()
        curve = torch.stack([r * theta.cos(), r * theta.sin()], 1)  # (grid, 2)
        nearest = torch.cat([torch.cdist(chunk, curve).argmin(1) for chunk in z.split(4096)])
        # The nearest grid point tells the turn; z's own polar angle, unwrapped next to it, gives
        # the angle along the spiral (exact for a point on the curve).
        theta_grid = theta[nearest]
        phi = torch.atan2(z[:, 1], z[:, 0])
        turn = torch.remainder(phi - theta_grid + math.pi, 2 * math.pi) - math.pi
        u_z = ((theta_grid + turn).clamp(min=0) / (2 * math.pi * self.turns)) ** 2
        return (u_z * self.num_classes).floor().long().clamp(0, self.num_classes - 1)

    def __repr__(self) -> str:
        return (f"SwissRollPrior(num_classes={self.num_classes}, radius={self.radius}, "
                f"turns={self.turns}, width={self.width})")  # fmt: skip


class UniformPrior:
    """Uniform on the box [-half_width, half_width]^dim."""

    def __init__(self, dim: int, half_width: float = 1.0):
        _check_positive(dim=dim, half_width=half_width)
        self.dim, self.half_width = int(dim), float(half_width)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        return (2 * torch.rand(n, self.dim, device=device) - 1) * self.half_width

    def __repr__(self) -> str:
        return f"UniformPrior(dim={self.dim}, half_width={self.half_width})"


class CategoricalPrior:
    """One-hot vectors (n, K), uniform over the K classes (the discrete codes' prior)."""

    def __init__(self, num_classes: int):
        _check_positive(num_classes=num_classes)
        self.dim = self.num_classes = int(num_classes)

    def sample(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        return F.one_hot(_parts(n, labels, self.num_classes, device), self.num_classes).float()

    def __repr__(self) -> str:
        return f"CategoricalPrior(num_classes={self.num_classes})"


def sample_labels(labels, n: int, n_classes: int) -> torch.Tensor:
    """The `labels` of n decoded samples (a tensor, an array or a list) as an int64 CPU tensor
    (n,), refused unless they are n integers in 0..n_classes-1."""
    k = torch.as_tensor(labels).cpu()
    if k.dim() != 1 or len(k) != n:
        raise AAEError(f"{n} samples but labels of shape {tuple(k.shape)}")
    if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
        raise AAEError(f"labels: {k.dtype}; expected integers")
    if len(k) and not ((k >= 0) & (k < n_classes)).all():
        raise AAEError(f"labels must be in 0..{n_classes - 1}")
    return k.long()


def sample_on(prior, n: int, device, labels: torch.Tensor | None = None) -> torch.Tensor:
    """n samples of `prior` on `device`: drawn there where its `sample` takes a `device` (the
    built-in priors; on a GPU this spares a host-to-device copy, a host sync, in every step),
    else drawn as it draws them and moved there (a user's prior with `sample(n, labels=None)`)."""
    kwargs = {} if labels is None else {"labels": labels}
    on_device = _takes_device(type(prior))
    drawn = prior.sample(n, device=device, **kwargs) if on_device else prior.sample(n, **kwargs)
    dim = getattr(prior, "dim", None)
    # The tensor's metadata only: no host sync, and a CUDA graph can hold the check.
    if not (isinstance(drawn, torch.Tensor) and drawn.dtype == torch.float32 and tuple(drawn.shape) == (n, dim)):
        what = (f"a {drawn.dtype} tensor of shape {tuple(drawn.shape)}" if isinstance(drawn, torch.Tensor)
                else f"a {type(drawn).__name__}")  # fmt: skip
        raise AAEError(f"prior {prior!r}: sample({n}) gave {what}; expected a float32 tensor ({n}, {dim})")
    if drawn.requires_grad:  # the discriminator's loss would train the prior (and plots fail on it)
        raise AAEError(f"prior {prior!r}: sample({n}) gave a tensor that requires grad; a prior's samples "
                       "are data: draw them under torch.no_grad(), or return .detach()")  # fmt: skip
    return drawn if on_device else drawn.to(device)


@functools.lru_cache(maxsize=None)
def _takes_device(cls) -> bool:
    try:
        return "device" in inspect.signature(cls.sample).parameters
    except (TypeError, ValueError):  # no inspectable signature
        return False


def _parts(n: int, labels: torch.Tensor | None, num_classes: int, device) -> torch.Tensor:
    """The part (n,) each sample comes from: the label where one is given (>= 0), else uniform.

    The uniform draw is made for every row, labeled or not, so that the random stream does not
    depend on which rows are labeled.
    """
    drawn = torch.randint(num_classes, (n,), device=device)
    if labels is None:
        return drawn
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.dtype.is_floating_point:
        raise AAEError(f"prior labels: expected an integer tensor of shape ({n},), got "
                       f"{labels.dtype} {tuple(labels.shape)}")  # fmt: skip
    if n and not (-1 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise AAEError(f"prior labels must be in -1..{num_classes - 1} (-1: no label), got "
                       f"{int(labels.min())}..{int(labels.max())}")  # fmt: skip
    labels = labels.to(drawn.device)
    return torch.where(labels >= 0, labels, drawn)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if name in _COUNTS and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
            raise AAEError(f"prior {name} {value!r}: must be an integer")
        if not (value > 0 and math.isfinite(value)):
            raise AAEError(f"prior {name} {value}: must be positive and finite")
        if value > FLOAT32_MAX:  # the samples are float32: inf, then NaN losses
            raise AAEError(f"prior {name} {value}: must be at most {FLOAT32_MAX:.3g}, float32's largest value")


FLOAT32_MAX = torch.finfo(torch.float32).max


_COUNTS = ("dim", "num_classes")  # the arguments that count something


# The priors of a continuous code, chosen with --prior; "categorical" is for discrete codes.
PRIORS = ("gaussian", "mixture", "swiss-roll", "uniform")
TWO_D_PRIORS = ("mixture", "swiss-roll")


def builtin_args(prior) -> dict | None:
    """The `make_prior` arguments, as the unsupervised model's `prior` and `prior_*` arguments,
    that rebuild a built-in prior object (GaussianPrior, MixturePrior, SwissRollPrior with 2 turns,
    UniformPrior): recorded by name, such a prior reloads without the object. None for any other
    object (a subclass, a swiss roll of other turns, a user's prior)."""
    kind = type(prior)
    if kind is GaussianPrior:
        return {"prior": "gaussian", "prior_std": prior.std}
    if kind is UniformPrior:
        return {"prior": "uniform", "prior_scale": prior.half_width}
    if kind is MixturePrior:
        return {"prior": "mixture", "prior_scale": prior.radius, "prior_components": prior.num_classes,
                "prior_std_along": prior.std_along, "prior_std_across": prior.std_across}  # fmt: skip
    if kind is SwissRollPrior and prior.turns == 2.0:  # make_prior's swiss roll has 2 turns
        return {"prior": "swiss-roll", "prior_scale": prior.radius,
                "prior_components": prior.num_classes, "prior_std_across": prior.width}  # fmt: skip
    return None


def make_prior(
    name: str, dim: int, std: float = 1.0, scale: float | None = None, components: int = 10,
    std_along: float = 0.5, std_across: float = 0.05,
) -> Prior:  # fmt: skip
    """Build a prior by name from `ModelConfig`'s prior fields; each prior uses its own.

    Args:
        name: one of PRIORS, or "categorical".
        dim: dimension of the code: 2 for the mixture and the swiss roll; K for categorical.
        std: the Gaussian's standard deviation.
        scale: the mixture's radius (default 1.4), the swiss roll's outer radius (3), the
            uniform box's half-width (1).
        components: the mixture's components, the swiss roll's segments.
        std_along, std_across: the mixture components' std along / across their radius;
            std_across is also the swiss roll's width.
    """
    if name not in (*PRIORS, "categorical"):
        raise AAEError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
    if name in TWO_D_PRIORS and dim != 2:
        raise AAEError(f"the {name} prior is 2-D: use --z-dim 2, not {dim}")
    size = {} if scale is None else {"radius": scale}
    if name == "mixture":
        return MixturePrior(components, std_along=std_along, std_across=std_across, **size)
    if name == "swiss-roll":
        return SwissRollPrior(components, width=std_across, **size)
    if name == "uniform":
        return UniformPrior(dim, 1.0 if scale is None else scale)
    if name == "categorical":
        return CategoricalPrior(dim)
    return GaussianPrior(dim, std)
