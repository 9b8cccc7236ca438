"""Data-parallel training over several processes with torch.distributed (`torchrun`).

    torchrun --nproc-per-node N -m torch_aae train MODEL ... --out RUN

Every rank holds the whole model. Each global mini-batch (`--batch-size` images, the same
permutation on every rank) is split into N equal shards, one per rank; before every optimizer
step the gradients of that optimizer's parameters are averaged over the ranks (one all-reduce of
a flat buffer, `sync_gradients`, which `optim.backward_step` runs between each phase's backward
pass and its step), so each phase takes the step single-process training would take on the
global batch. This is DistributedDataParallel's algorithm, applied at the optimizer instead of with the
`DistributedDataParallel` module wrapper: an AAE step shares one encoder pass between two phases
and freezes the discriminator during the generator phase, which the wrapper's gradient hooks do
not support without extra passes. Backend: NCCL on CUDA, gloo on CPU.

Rank 0 alone writes the run folder (config, checkpoints, metrics, plots) and shows progress;
the epoch's logged means are averaged over ranks. In-step randomness (prior samples, noise,
dropout) is seeded per rank; the permutation of each epoch is a function of (seed, epoch).
"""

from __future__ import annotations

import atexit
import gc
import os
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .errors import AAEError


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment (WORLD_SIZE, RANK), else a single process."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise AAEError("WORLD_SIZE and RANK must be integers (set by torchrun)") from None
    return World(rank, size)


def init(device: torch.device) -> tuple[World, torch.device, bool]:
    """Join the process group when launched by torchrun: the world, this rank's device, and
    whether this call created the group (then `shutdown` it when done).

    On CUDA each rank takes the GPU of its LOCAL_RANK (NCCL); on CPU the backend is gloo.
    """
    world = world_from_env()
    if not world.active:
        return world, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown)  # also on an error before the caller's own shutdown
    if dist.get_world_size() != world.size:
        raise AAEError(f"WORLD_SIZE {world.size} differs from the process group's {dist.get_world_size()}")
    return world, device, created


def shutdown() -> None:
    """Leave the process group (a process that exits with it alive can abort in gloo's threads),
    and free what still refers to it while the interpreter is fully alive: gloo objects released
    during interpreter finalization can abort the process ("terminate called without an active
    exception", seen once in CI's 2-process test)."""
    if dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def check_batch(batch_size: int, world: World) -> None:
    if world.active and batch_size % world.size:
        raise AAEError(f"--batch-size {batch_size} must be divisible by the {world.size} processes")


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights (and buffers)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t, 0)


# The optimizers whose gradients are averaged over the ranks before each step, and their world.
_AVERAGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def average_gradients_of(optimizers: dict, world: World) -> None:
    """From now on, `sync_gradients(opt)` averages each of these optimizers' gradients over the
    ranks (`optim.backward_step` calls it between a phase's backward pass and its step)."""
    for opt in optimizers.values():
        _AVERAGED[opt] = world


def sync_gradients(opt: torch.optim.Optimizer) -> None:
    """Average `opt`'s gradients over the ranks, in one all-reduce of a flat buffer; nothing for
    an optimizer not registered by `average_gradients_of` (a single process).

    This runs before fp16's loss scaler looks at the gradients, so that every rank sees the same
    averaged ones: an inf on any rank is an inf on all, and all skip that step and lower their
    scale together (checked on each rank's own gradients, the ranks would part).
    """
    world = _AVERAGED.get(opt)
    if world is None:
        return
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world.size
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def shard(index_batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices."""
    if not world.active:
        return index_batch
    return index_batch.tensor_split(world.size)[world.rank]


def average_sums(sums: dict, world: World) -> dict:
    """The running sums of the logs, averaged over ranks (one all-reduce)."""
    if not world.active or not sums:
        return sums
    keys = list(sums)  # the same order on every rank
    flat = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in keys])
    dist.all_reduce(flat)
    flat /= world.size
    return dict(zip(keys, flat.unbind()))


def any_rank(flag: bool, world: World, device) -> bool:
    """True on every rank if `flag` is true on any (a stop request reaches all ranks together)."""
    if not world.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, world: World):
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()
