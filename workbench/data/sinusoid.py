"""Sinusoid regression tasks (Finn et al., 2017, section 5.1).

Each task is `y = amplitude * sin(x - phase)` with amplitude drawn from
U[0.1, 5.0], phase from U[0, pi] and inputs from U[-5, 5]. A sampler is a
pure function of its seed: the same seed yields the same stream of tasks.
"""

import numpy as np

from workbench.data.episodes_types import Episodes, TaskStream
from workbench.errors import ArgumentError

__all__ = ["SinusoidTasks"]

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, np.pi)
INPUT_RANGE = (-5.0, 5.0)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")


def _check_range(name, value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = None
    if low is None or not low <= high:
        raise ArgumentError(f"Expected `{name}` to be a pair (low, high) with low <= high. Received: {name}={value!r}")
    return low, high


class SinusoidTasks(TaskStream):
    """Draws meta-batches of sinusoid regression tasks.

    Args:
        shots: support examples per task (K in K-shot regression).
        queries: query examples per task.
        seed: seed of the NumPy generator behind `sample()`.
        amplitude_range, phase_range, input_range: `(low, high)` of the
            uniform distributions; the defaults are the MAML paper's.

    Example:

    >>> tasks = SinusoidTasks(shots=5, queries=10, seed=0)
    >>> batch = tasks.sample(25)              # the training stream
    >>> fixed = tasks.sample(600, seed=1234)  # a fixed evaluation set
    >>> batch.support_x.shape
    (25, 5, 1)
    """

    def __init__(
        self,
        shots,
        queries,
        seed=None,
        amplitude_range=AMPLITUDE_RANGE,
        phase_range=PHASE_RANGE,
        input_range=INPUT_RANGE,
    ):
        _check_count("shots", shots, 1)
        _check_count("queries", queries, 1)
        self.shots = int(shots)
        self.queries = int(queries)
        self.seed = seed
        self.amplitude_range = _check_range("amplitude_range", amplitude_range)
        self.phase_range = _check_range("phase_range", phase_range)
        self.input_range = _check_range("input_range", input_range)
        self._rng = np.random.default_rng(seed)

    def sample(self, batch_size, seed=None):
        """Draws `batch_size` tasks as `Episodes` of float32 `[B, n, 1]` arrays.

        Without `seed`, the tasks come from this sampler's own stream, which
        advances with every call. With `seed`, they come from a fresh
        generator and the stream is left untouched: use this for a fixed
        evaluation set that is the same whatever was drawn before.
        """
        _check_count("batch_size", batch_size, 1)
        rng = self._rng if seed is None else np.random.default_rng(seed)
        amplitude = rng.uniform(*self.amplitude_range, size=(batch_size, 1, 1))
        phase = rng.uniform(*self.phase_range, size=(batch_size, 1, 1))
        x = rng.uniform(*self.input_range, size=(batch_size, self.shots + self.queries, 1))
        y = amplitude * np.sin(x - phase)
        x = x.astype(np.float32)
        y = y.astype(np.float32)
        return Episodes(
            support_x=x[:, : self.shots],
            support_y=y[:, : self.shots],
            query_x=x[:, self.shots :],
            query_y=y[:, self.shots :],
        )

    def __repr__(self):
        return f"SinusoidTasks(shots={self.shots}, queries={self.queries}, seed={self.seed!r})"
