"""Crash safety: a real training process killed with SIGKILL, mid-epoch and in the middle of a
checkpoint write, resumes to weights bitwise equal to an uninterrupted run's (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from torch_aae.checkpoint import load_checkpoint

TRAIN = ["train", "unsupervised", "--subset", "400", "--hidden", "256", "--disc-hidden", "32",
         "--epochs", "3", "--batch-size", "20", "--checkpoint-every", "1", "--no-progress",
         "--lr-recon", "1e-3", "--lr-reg", "2e-4"]  # fmt: skip


def start(out, *extra) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "torch_aae", *TRAIN, "--out", str(out), *extra],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err


def kill_when(proc: subprocess.Popen, condition, timeout: float = 60) -> bool:
    """SIGKILL `proc` as soon as condition() holds; False if it ended or timed out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.kill()
    proc.wait()
    return False


def step_of(run) -> int:
    try:
        return load_checkpoint(run / "checkpoints" / "latest.pt")["state"]["step"]
    except Exception:
        return -1


def writing_checkpoint(run) -> bool:
    folder = run / "checkpoints"
    return folder.is_dir() and any(p.name.endswith(".tmp") for p in folder.iterdir())


def final_weights(run) -> dict:
    return load_checkpoint(run / "checkpoints" / "latest.pt")["networks"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    finish(start(run))
    return final_weights(run)


def test_sigkill_mid_epoch_and_mid_write_then_resume_is_bitwise_equal(tmp_path, uninterrupted):
    run = tmp_path / "run"
    # 1. Mid-epoch: some steps into epoch 1 (20 steps per epoch).
    assert kill_when(start(run), lambda: step_of(run) >= 7)
    assert 7 <= step_of(run) < 60
    # 2. During a checkpoint write: the temporary file exists, the rename has not happened.
    for _ in range(10):
        if kill_when(start(run, "--resume"), lambda: writing_checkpoint(run)):
            break
    else:
        pytest.fail("never caught a checkpoint write in progress")
    # The latest checkpoint is still whole and loads; the half-written one is not it.
    assert step_of(run) >= 7
    # 3. Resume to the end: the final weights equal the uninterrupted run's, bit for bit.
    finish(start(run, "--resume"))
    resumed = final_weights(run)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    assert not writing_checkpoint(run)  # stale temporary files are cleaned on resume



@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "group-sigterm", "sigkill", "one-worker"])
def test_ctrl_c_on_a_parallel_bench_checkpoints_each_seed_without_a_traceback(tmp_path, how):
    # Ctrl-C reaches every process of the foreground group; `timeout -s INT` does the same here.
    out = tmp_path / "bench"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    bench = ["bench", "semi-supervised", "--labels", "100", "--subset", "400", "--hidden", "64",
             "--disc-hidden", "32", "--epochs", "50", "--batch-size", "20", "--checkpoint-every", "1",
             "--seeds", "3", "--jobs", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    # A background job (pytest run with `&`, some CI runners) starts with SIGINT ignored, which
    # its children inherit: the bench is given the terminal's default, as a user's command has.
    proc = subprocess.Popen([sys.executable, "-m", "torch_aae", *bench], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seeds = [out / "seed-0", out / "seed-1"]
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and min(map(step_of, seeds)) < 2:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C
    elif how == "group-sigterm":  # `timeout`, a scheduler: every worker gets a SIGTERM of its own too
        os.killpg(proc.pid, signal.SIGTERM)
    elif how == "sigterm":  # `kill PID`: the main process alone, which must not leave its workers training
        os.kill(proc.pid, signal.SIGTERM)
    elif how == "sigkill":  # the main process killed: its workers must stop, checkpoint and end, not train on
        os.kill(proc.pid, signal.SIGKILL)
    else:  # seed 1's worker alone: the bench stops, though seed 0 (read first) trains on
        os.kill(_holder_of(seeds[1] / ".lock", workers), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # stderr closes once the workers, which share it, end
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "workers left running"
    assert "Traceback" not in err
    if how == "sigkill":
        assert proc.returncode == -signal.SIGKILL
        for seed in seeds:  # each worker stopped at a step boundary (not killed) and said so
            assert f"aae bench: the main process is gone; {seed}: interrupted at epoch" in err, err
    else:
        assert proc.returncode == 130, err  # as Ctrl-C's: 1 before, as for an error
        assert err.strip().splitlines()[-1] == ("aae: interrupted; each unfinished seed keeps its last "
                                                "checkpoint: run the same `aae bench` command again to continue")
    for seed in seeds:
        assert step_of(seed) >= 2 and not (seed / "summary.json").exists()
    # Seed 2, queued behind them (the pool hands a worker its next seed at once), is not started.
    assert not (out / "seed-2").exists()


def _holder_of(path: Path, pids: list[int]) -> int:
    """The one of `pids` that holds `path` open (a run folder's lock: the worker training it)."""
    for pid in pids:
        try:
            if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no process holds {path}")


def _children(pid: int) -> list[int]:
    """The pids of the processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
