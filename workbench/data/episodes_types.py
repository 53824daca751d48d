"""The containers shared by every episodic task sampler: `Episodes`, and the `TaskStream` state.

A meta-batch holds `B` tasks. Each task has a support set (the examples the
inner loop adapts on) and a query set (the examples the adapted model is
scored on). The arrays always carry the task axis first:

- regression (sinusoid): `x` and `y` are float32 arrays `[B, examples, 1]`;
- N-way K-shot classification: `x` is float32 `[B, N*K, H, W, C]` and `y` is
  int32 `[B, N*K]`, with each task's labels remapped to `0..N-1`.
"""

import dataclasses

import numpy as np

__all__ = ["Episodes", "TaskStream"]

_FIELDS = ("support_x", "support_y", "query_x", "query_y")


@dataclasses.dataclass(frozen=True, eq=False)
class Episodes:
    """A meta-batch of tasks: support and query arrays, task axis first.

    The fields may be NumPy arrays or tensors; anything with a `.shape`.
    Shapes are checked once here so that learners can trust them.
    """

    support_x: object
    support_y: object
    query_x: object
    query_y: object

    def __post_init__(self):
        shapes = {}
        for name in _FIELDS:
            shape = getattr(getattr(self, name), "shape", None)
            if shape is None or len(shape) < 2:
                raise ValueError(
                    f"Expected `{name}` to be an array with at least two axes (tasks, examples, ...). Received: {name}.shape={shape}"
                )
            shapes[name] = tuple(shape)
        tasks = {shape[0] for shape in shapes.values()}
        if len(tasks) != 1:
            raise ValueError(f"Expected every field of `Episodes` to hold the same number of tasks (first axis). Received: shapes={shapes}")
        for x_name, y_name in (("support_x", "support_y"), ("query_x", "query_y")):
            if shapes[x_name][1] != shapes[y_name][1]:
                raise ValueError(
                    f"Expected `{x_name}` and `{y_name}` to hold the same "
                    "number of examples per task (second axis). Received: "
                    f"{x_name}.shape={shapes[x_name]}, "
                    f"{y_name}.shape={shapes[y_name]}"
                )

    @property
    def num_tasks(self):
        """The number of tasks `B` in this meta-batch."""
        return int(self.support_x.shape[0])

    def take(self, indices):
        """Returns the tasks at `indices` (a slice or an index array) as new `Episodes`."""
        return Episodes(*(getattr(self, name)[indices] for name in _FIELDS))


class TaskStream:
    """A sampler whose tasks come from the NumPy generator `self._rng`.

    Its state can be read and restored, so that a resumed run draws the same
    tasks as an uninterrupted one.
    """

    _rng: np.random.Generator

    @property
    def rng_state(self) -> dict:
        """The generator's state (JSON-serializable)."""
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state
