"""Optimizer construction shared by the variants' `make_optimizers`."""

from __future__ import annotations

import torch


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch supports it for the parameters' device
    (CPU since torch 2.4, CUDA): the unfused update over ~5M parameters costs as much as a
    third of the blog model's step on a 2-core CPU."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # older torch or an unsupported device
        return torch.optim.Adam(params, lr=lr, betas=betas)


def make(params, lr: float, cfg, regularization: bool = False) -> torch.optim.Optimizer:
    """The optimizer of one phase, as `cfg.optimizer` says.

    adam: betas (0.9, 0.999), or (beta1_reg, 0.999) for the regularization phases (discriminator,
    generator). sgd (the paper's choice): momentum 0.9, or beta1_reg for the regularization phases
    (the paper: 0.1).
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(list(params), lr=lr, momentum=cfg.beta1_reg if regularization else 0.9)
    return adam(params, lr, (cfg.beta1_reg, 0.999) if regularization else (0.9, 0.999))
