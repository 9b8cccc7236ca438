"""Stopping a training cleanly: a signal (Ctrl-C, SIGTERM) or a request from elsewhere (a
parallel bench's worker) stops the loop at the next step boundary, where it checkpoints."""

from __future__ import annotations

import signal
import threading


# Set from outside the training loop (a parallel bench's worker, when its main process asks it
# to stop or is gone): stop at the next step and checkpoint, as on a first signal. It never
# counts as a second signal, so a SIGTERM to a bench's whole process group (each worker gets
# its own and the main process's request) still stops every worker at a step boundary.
SOFT_STOP = threading.Event()


def soft_stop_handler(signum, frame) -> None:
    """A signal handler that sets SOFT_STOP: a bench worker's SIGTERM, however many arrive.
    StopOnSignal leaves it in place."""
    SOFT_STOP.set()


class StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, a scheduler's preemption) during training asks the
    loop to stop at the next step boundary, where it checkpoints: a signal never leaves a
    half-done step (say, reconstruction applied, discriminator not) in a checkpoint. A second
    signal stops at once, keeping the previous checkpoint. Handlers are installed only in the
    main thread, and SIGINT only where it is not ignored (a background job). SOFT_STOP set
    elsewhere asks for the same stop as a first signal."""

    def __init__(self):
        self._signalled, self._previous = False, {}

    @property
    def requested(self) -> bool:
        return self._signalled or SOFT_STOP.is_set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) not in (signal.SIG_IGN, soft_stop_handler):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class SigtermInterrupts:
    """Within, SIGTERM raises KeyboardInterrupt as Ctrl-C does (main thread only, and not in a
    bench worker, whose SIGTERM only asks for a soft stop): work without step boundaries to stop
    at, the final evaluation, ends with the caller's message instead of a silent kill."""

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, soft_stop_handler):
                self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
