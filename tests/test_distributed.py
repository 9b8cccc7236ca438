"""Data-parallel training: 2 CPU processes (gloo) equal 1 process on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from torch_aae import distributed
from torch_aae.errors import AAEError

WORKER = REPO_ROOT / "tests" / "ddp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, out, precision: str = "fp32", init_scale: float = 0, inf_at: int = 0) -> list[dict]:
    """Train in `world` processes; what each rank saved (weights, summary, fp16's final scale).
    fp16 starts its loss scale at `init_scale`; `inf_at` k > 0 poisons the last rank's k-th
    decoder gradient (see tests/ddp_worker.py)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        if world > 1:
            env.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        args = [sys.executable, str(WORKER), str(REPO_ROOT / "data"), str(out), precision,
                str(init_scale), str(inf_at)]  # fmt: skip
        procs.append(subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return [torch.load(f"{out}.rank{rank}", weights_only=True) for rank in range(world)]


def test_two_gloo_processes_train_like_one_on_the_global_batch(tmp_path):
    (single,) = _run(1, tmp_path / "single.pt")
    ddp, _ = _run(2, tmp_path / "ddp.pt")
    assert ddp["summary"]["processes"] == 2 and "processes" not in single["summary"]
    for name, w in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    # Training moved the weights: the equality is not that of two untouched models.
    torch.manual_seed(0)
    from torch_aae import UnsupervisedAAE

    fresh = UnsupervisedAAE(z_dim=2, hidden=32, disc_hidden=32, dropout=0.0).state_dict()
    moved = (single["weights"]["encoder.net.0.weight"] - fresh["encoder.net.0.weight"]).abs().max()
    assert moved > 1e-3
    assert ddp["summary"]["test_recon_bce"] == pytest.approx(single["summary"]["test_recon_bce"], rel=1e-4)


def test_two_gloo_processes_in_fp16_skip_the_same_overflowing_steps(tmp_path):
    """fp16 under torchrun: the gradients are averaged before the loss scaler looks at them, so
    the ranks skip the same steps and lower their scale together. The run starts at a scale of
    2^24, so that its first steps overflow (here 6 of its 20); the two ranks end with the very
    same weights and scale. float16 products on shards and on the whole batch round apart, so
    the one-process run is matched by its loss only."""
    (single,) = _run(1, tmp_path / "single.pt", "fp16", 2.0**24)
    rank0, rank1 = _run(2, tmp_path / "ddp.pt", "fp16", 2.0**24)
    assert rank0["scale"] == rank1["scale"] < 2.0**24
    assert rank0["summary"]["processes"] == 2
    for name, w in rank0["weights"].items():
        assert torch.equal(rank1["weights"][name], w), name
    assert rank0["summary"]["test_recon_bce"] == pytest.approx(single["summary"]["test_recon_bce"], rel=0.01)
    apart = (rank0["weights"]["encoder.net.0.weight"] - single["weights"]["encoder.net.0.weight"]).abs().max()
    assert apart < 0.05  # the two runs stayed close (fp16 against fp32 differs by about 0.01 here)


def test_an_overflow_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    """Only the last rank's 3rd decoder gradient is made infinite. The average carries the inf to
    both ranks, so both skip that update and halve their scale once, and they end bitwise equal.
    (Had each rank checked its own gradients, rank 0 would have stepped and rank 1 not.)"""
    clean0, _ = _run(2, tmp_path / "clean.pt", "fp16", 2.0**8)
    assert clean0["scale"] == 2.0**8  # at this scale no step overflows by itself
    rank0, rank1 = _run(2, tmp_path / "poisoned.pt", "fp16", 2.0**8, inf_at=3)
    assert rank0["scale"] == rank1["scale"] == 2.0**7
    for name, w in rank0["weights"].items():
        assert torch.equal(rank1["weights"][name], w), name
    # The skipped update changed the outcome: the poisoned run is not the clean one.
    assert not torch.equal(rank0["weights"]["decoder.net.0.weight"], clean0["weights"]["decoder.net.0.weight"])


def test_shard_splits_a_global_batch_evenly_and_completely():
    batch = torch.arange(100)
    shards = [distributed.shard(batch, distributed.World(r, 4)) for r in range(4)]
    assert [len(s) for s in shards] == [25] * 4 and torch.equal(torch.cat(shards), batch)
    assert torch.equal(distributed.shard(batch, distributed.SINGLE), batch)


def test_batch_must_divide_among_processes():
    with pytest.raises(AAEError, match="--batch-size 100 must be divisible by the 3 processes"):
        distributed.check_batch(100, distributed.World(0, 3))
    distributed.check_batch(100, distributed.World(0, 4))
    distributed.check_batch(7, distributed.SINGLE)


def test_world_comes_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert distributed.world_from_env() == distributed.World(2, 4)
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(AAEError, match="must be integers"):
        distributed.world_from_env()


def test_ranks_agree_on_a_stop_every_few_steps_whatever_log_every(monkeypatch):
    """Agreed only every --log-every steps, a SIGTERM under torchrun with a large one (1000 here,
    more than the run's steps) was never honoured: the run trained to its end."""
    from torch_aae import train as train_module
    from torch_aae.distributed import World

    asked = []
    monkeypatch.setattr(train_module.distributed, "any_rank",
                        lambda flag, world, device: asked.append(flag) or flag)  # fmt: skip
    world = World(rank=0, size=2)
    assert world.active

    class Stop:
        requested = False

    stop, stopped = Stop(), []
    for step in range(1, 31):
        stop.requested = step >= 12
        if train_module._stop_now(stop, step, 1000, world, "cpu", epoch_end=step == 25):
            stopped.append(step)
    assert stopped == [20, 25, 30]
    assert asked == [False, True, True, True]  # steps 10, 20, 25 (the epoch's end) and 30
    assert train_module.STOP_AGREE_STEPS == 10
    asked.clear()
    stopped.clear()
    for step in range(1, 13):
        stop.requested = step >= 9
        if train_module._stop_now(stop, step, 4, world, "cpu"):
            stopped.append(step)
    assert stopped == [12] and asked == [False, False, True]  # a smaller --log-every: every 4 steps
