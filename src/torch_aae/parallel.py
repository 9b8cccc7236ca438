"""Training a bench's seeds: one after another, or in worker processes (`aae bench --jobs N`),
which stop at a step boundary with a checkpoint when asked to, or when the bench's main process
is gone."""

from __future__ import annotations

import threading
import time

import torch


def _train_seed(config_dict: dict, run: str, progress: bool, threads: int | None = None) -> dict:
    """Train (or resume) one seed's run; its summary. Runs in a worker process when jobs > 1."""
    from pathlib import Path

    from .api import build_model
    from .config import from_dict
    from .data import load_dataset
    from .train import fit

    if threads:
        torch.set_num_threads(threads)
    cfg = from_dict(config_dict)
    run = Path(run)
    seed = cfg.train.seed
    torch.manual_seed(seed)
    d = cfg.data
    data = load_dataset(d.dataset, d.data_dir, d.subset, d.val_size, cfg.data_draw_seed)
    model = build_model(cfg, data)
    resume = (run / "checkpoints" / "latest.pt").is_file()
    # A seed killed before its first checkpoint left a run of this config with nothing to
    # resume (bench_seeds checked the config): it starts again.
    return fit(model, data, cfg.train, out=run, resume=resume, overwrite=not resume, config=cfg,
               progress=progress)  # fmt: skip


def _train_in_parallel(todo: list, jobs: int) -> dict:
    """Train the seeds of `todo` in `jobs` worker processes; their summaries by seed.

    The workers ignore Ctrl-C (SIGINT), so none dies in a traceback. Ctrl-C or SIGTERM to the
    main process (`kill PID`), or a seed that fails, makes it ask every worker to stop (an
    Event that each worker's watch thread turns into stopping.SOFT_STOP): a training stops at
    its next step and checkpoints, a seed not started yet is not started, and the main process
    waits for them (further signals only say so) before it raises Interrupted, or the seed's
    error. In a worker, SIGTERM (its own, from a signal to the whole process group: `timeout`,
    a scheduler) asks for the same stop, however many arrive. A worker whose main process is
    gone (SIGKILL) stops and checkpoints as well, then exits."""
    import multiprocessing
    import os
    import signal
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from .errors import Interrupted

    threads = max(1, torch.get_num_threads() // jobs)
    main = threading.current_thread() is threading.main_thread()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:  # the workers are started by submit(), and inherit the ignored SIGINT until they start
        pool = ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context, initializer=_worker_start,
                                   initargs=(os.getpid(), stop))  # fmt: skip
        futures = {seed: pool.submit(_worker_seed, cfg.to_dict(), str(run), threads)
                   for seed, cfg, run in todo}  # fmt: skip
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        with pool:
            try:
                wait(futures.values(), return_when=FIRST_EXCEPTION)  # not in seed order: the first to fail
                failed = [f.exception() for f in futures.values() if f.done() and f.exception() is not None]
                if failed:
                    raise failed[0]
                return {seed: future.result() for seed, future in futures.items()}
            except BaseException as e:  # Ctrl-C, SIGTERM, or a seed that failed
                stop.set()
                _wait_for_workers(pool, main)
                if isinstance(e, KeyboardInterrupt):
                    raise Interrupted("interrupted") from None
                raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous_term)


def _wait_for_workers(pool, main: bool) -> None:
    """Wait until every worker has checkpointed and ended. In one call: shutdown(wait=False)
    first would drop the pool's manager thread, and a later wait=True return at once. A signal
    meanwhile says what is awaited instead of interrupting the wait (an interrupted join leaves
    the thread marked as ended, and the wait would end with the workers still training)."""
    import signal
    import sys

    def waiting(signum, frame):
        print("aae bench: stopping; waiting for the workers to checkpoint", file=sys.stderr, flush=True)

    saved = {sig: signal.signal(sig, waiting) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# A bench worker's state: whether it trains a seed now, whether its main process is gone, and
# the main process's stop request (an Event, given to _worker_start).
_BUSY, _ORPHANED = threading.Event(), threading.Event()
_STOP = None


def _worker_start(parent: int, stop) -> None:
    """A bench worker's initializer: SIGINT ignored (Ctrl-C is the main process's to handle,
    whatever thread started the bench), SIGTERM asks a training to stop at its next step (never
    at once: a process-group signal and the pool's own terminate() may both arrive), and a
    thread watches for the main process's request (`stop`) and for its end."""
    global _STOP
    import signal

    from .stopping import soft_stop_handler

    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, soft_stop_handler)
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()


def _watch_parent(parent: int, stop, every: float = 0.5) -> None:
    """Pass the main process's stop request on to the training (stopping.SOFT_STOP). Once the
    main process is gone (SIGKILL, a crash), stop this worker's training at its next step, with
    a checkpoint, and end the worker; an idle worker ends at once. Without this, a worker
    trained on alone, and then waited forever for work that would never come."""
    import os

    from .stopping import SOFT_STOP

    while os.getppid() == parent:
        if stop.is_set():
            SOFT_STOP.set()
        time.sleep(every)
    _ORPHANED.set()
    SOFT_STOP.set()
    if not _BUSY.is_set():  # else _worker_seed ends the process once the training has stopped
        os._exit(1)


def _worker_seed(config_dict: dict, run: str, threads: int) -> dict:
    """_train_seed in a bench worker, unless the bench was asked to stop (a seed queued before
    the request is not started); the worker ends after it if its main process is gone, and says
    on stderr how its seed ended (no main process is left to say it)."""
    import os
    import sys

    from .errors import Interrupted
    from .stopping import SOFT_STOP

    _BUSY.set()
    try:
        if SOFT_STOP.is_set() or (_STOP is not None and _STOP.is_set()):
            raise Interrupted("not started: the bench was asked to stop")
        summary = _train_seed(config_dict, run, False, threads)
        if _ORPHANED.is_set():
            print(f"aae bench: the main process is gone; {run}: finished (summary.json)", file=sys.stderr, flush=True)
        return summary
    except BaseException as e:
        if _ORPHANED.is_set():
            if not isinstance(e, Interrupted):
                what = f"{type(e).__name__}: {e}"
            elif str(e).startswith("not started"):
                what = str(e)
            else:
                what = f"{str(e).split(';')[0]}, with a checkpoint: run the same `aae bench` command again to continue"
            print(f"aae bench: the main process is gone; {run}: {what}", file=sys.stderr, flush=True)
        raise
    finally:
        _BUSY.clear()
        if _ORPHANED.is_set():
            os._exit(1)
