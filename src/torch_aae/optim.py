"""Optimizer construction shared by the variants' `make_optimizers`, and each phase's update
(`backward_step`), with fp16's loss scaling when the step runs under `loss_scaling`."""

from __future__ import annotations

import contextlib
import contextvars

import torch

from . import distributed
from .errors import AAEError


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), kernel: str = "torch") -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch supports it for the parameters' device
    (CPU since torch 2.4, CUDA): the unfused update over ~5M parameters costs as much as a
    third of the blog model's step on a 2-core CPU. kernel "triton": the same update in
    `triton_adam`'s kernels (CUDA), which use the GPU's memory rate."""
    params = list(params)
    if kernel == "triton":
        from .triton_adam import TritonAdam

        return TritonAdam(params, lr=lr, betas=betas)
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
    return adam(params, lr, (cfg.beta1_reg, 0.999) if regularization else (0.9, 0.999), cfg.adam_kernel)


def check_kernel(train_cfg, device: torch.device) -> None:
    """Refuse --adam-kernel triton where it cannot run, before anything is trained."""
    if train_cfg.adam_kernel != "triton":
        return
    if train_cfg.optimizer != "adam":
        raise AAEError(f"--adam-kernel triton is an Adam update; --optimizer is {train_cfg.optimizer}")
    from .triton_adam import unavailable

    reason = unavailable(torch.device(device))
    if reason is not None:
        raise AAEError(f"--adam-kernel triton: {reason}")


# The GradScaler of the step being run under fp16 (`loss_scaling`); None: no loss scaling.
_SCALER: contextvars.ContextVar = contextvars.ContextVar("loss_scaler", default=None)


def grad_scaler(precision: str, device) -> torch.amp.GradScaler | None:
    """fp16's loss scaler (its scale starts at 2^16, halves after a step with an inf or NaN
    gradient, doubles after 2,000 clean steps); None for the other precisions, which need none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """One phase's update: gradients of `loss`, averaged over the processes under torchrun
    (`distributed.sync_gradients`), then `optimizer`'s step.

    Within `loss_scaling(scaler)` (fp16) the loss is multiplied by the scaler's scale before the
    backward pass, so that small gradients survive float16, and the step goes through the
    scaler: it unscales the gradients and skips the update if any is inf or NaN. A fused Adam
    does both inside its kernel, with no host sync.
    """
    scaler = _SCALER.get()
    (loss if scaler is None else scaler.scale(loss)).backward()
    distributed.sync_gradients(optimizer)  # under torchrun: averaged over the processes
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)


@contextlib.contextmanager
def loss_scaling(scaler: torch.amp.GradScaler | None):
    """Run one training step's phases through `scaler` (None: a plain step), then update its
    scale once, from every phase's gradients. A step that raises leaves the scale as it was."""
    token = _SCALER.set(scaler)
    try:
        yield
    finally:
        _SCALER.reset(token)
    if scaler is not None:
        scaler.update()
