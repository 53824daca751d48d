"""Where training reports its progress toward a run's objective, for whoever listens (a sweep's pruner).

Training code calls `report(step, values)` after each epoch (transfer) or
meta-validation (meta) and knows nothing of who listens. A sweep sets a
listener around a trial's run with `listening(...)`; the listener may raise
`Pruned` to stop a trial that is not worth finishing. Without a listener,
`report` does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

Listener = Callable[[int, Mapping[str, float]], None]

_listeners: list[Listener] = []


class Pruned(Exception):
    """A run stopped early by its listener: its figures so far are not worth finishing. Not a failure."""

    def __init__(self, step: int):
        super().__init__(f"pruned after step {step}")
        self.step = step


def report(step: int, values: Mapping[str, float]) -> None:
    """Tell the listener (if any) the logged values after `step` (counted from 1); may raise `Pruned`."""
    if _listeners:
        _listeners[-1](step, values)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """While inside, `report` calls `listener`."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@contextlib.contextmanager
def unheard() -> Iterator[None]:
    """While inside, `report` reaches no listener: for training that is not the listened run's own, such as its base's."""
    with listening(lambda step, values: None):
        yield
