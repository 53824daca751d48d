"""Ctrl-C and SIGTERM stop a run, always, and leave it resumable.

Python turns SIGINT into a `KeyboardInterrupt` raised wherever the main thread
happens to be. When that is inside a finalizer (`__del__`, a weakref callback;
TensorFlow runs many while it trains), Python prints "Exception ignored in ..."
and carries on: the user's Ctrl-C is lost. And SIGTERM, what `kill`, schedulers
and containers send, ends the process without unwinding at all.

So while a run trains, `stop_signals()` records SIGINT and SIGTERM and raises
`Interrupted` from the handler; the training loops also call `check()` at every
batch or meta-iteration and before the run is marked finished, which raises
`Interrupted` again if the first one was swallowed. Code that must not be torn
in half (a meta-iteration) uses `deferred()`: inside it a signal is only
recorded, and the loop answers it at the next `check()`. A second signal always
interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; `exit_status` is the shell's 128 + signal number."""

    def __init__(self, signum: int, run_path: Path | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.run_path = signum, run_path

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _State:
    received: int | None = None  # the first signal received, until the run ends
    deferring = 0
    installed = False


def requested() -> bool:
    """Whether a stop signal arrived since the run started."""
    return _State.received is not None


def check() -> None:
    """Raise `Interrupted` if a stop signal arrived since the run started."""
    if requested():
        raise Interrupted(_State.received)


@contextlib.contextmanager
def deferred():
    """While inside, a first stop signal is recorded for the next `check()` instead of raised."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1


def _handle(signum, frame):
    first = _State.received is None
    if first:
        _State.received = signum
    if first and _State.deferring:
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals():
    """Handle SIGINT and SIGTERM as described above while inside (main thread only; nestable; ignored signals stay ignored)."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal ignored on purpose stays ignored: a shell starts background jobs with SIGINT
    # ignored, so that a Ctrl-C meant for the foreground does not stop them.
    previous = {number: signal.getsignal(number) for number in SIGNALS if signal.getsignal(number) is not signal.SIG_IGN}
    _State.installed, _State.received = True, None
    for number in previous:
        signal.signal(number, _handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _State.installed, _State.received = False, None
