"""Learned inner learning rates (Meta-SGD and MAML++), and how they are saved.

Meta-SGD learns one rate per parameter (a tensor shaped like each adapted
variable); MAML++ learns one rate per adapted variable and inner step. Both
are ordinary Keras variables that the outer optimizer updates. They are part
of what adaptation needs, so they are saved beside the exported model, keyed
by the path of the variable they scale (e.g. "hidden_1/kernel").
"""

import keras
import numpy as np

from workbench import runs
from workbench.errors import ArgumentError

__all__ = ["KeyedVariables", "InnerRates", "save_rates", "load_rates"]


class KeyedVariables:
    """Learned variables of the inner loop, each saved under a key: `keys` and `variables`, in one order."""

    keys: list
    variables: list
    description = "inner rates"  # what the variables are, for errors

    def as_dict(self):
        """`{key: np.ndarray}` of the current values."""
        return {key: np.asarray(variable.numpy()) for key, variable in zip(self.keys, self.variables, strict=True)}

    def restore(self, values):
        """Assigns values from `as_dict()`; the keys and shapes must match."""
        if set(values) != set(self.keys):
            raise ArgumentError(f"Expected {self.description} for exactly {sorted(self.keys)}. Received: keys={sorted(values)}")
        for key, variable in zip(self.keys, self.variables, strict=True):
            value = np.asarray(values[key])
            if value.shape != tuple(variable.shape):
                raise ArgumentError(
                    f"Expected {self.description} of shape {tuple(variable.shape)} for {key!r}. Received: shape={value.shape}"
                )
            variable.assign(value)


class InnerRates(KeyedVariables):
    """The learned inner rates of one learner, keyed by the path of the variable each scales.

    Args:
        kind: "per_parameter" (Meta-SGD) or "per_step" (MAML++).
        variables: the adapted model variables, in inner-loop order.
        initial: the starting value of every rate.
        steps: inner steps (the length of each "per_step" rate).
    """

    def __init__(self, kind, variables, initial, steps):
        if kind not in ("per_parameter", "per_step"):
            raise ArgumentError(f"Expected `kind` to be 'per_parameter' or 'per_step'. Received: kind={kind!r}")
        self.kind = kind
        self.keys = [variable.path for variable in variables]
        self.variables = [
            keras.Variable(
                np.full(tuple(variable.shape) if kind == "per_parameter" else (steps,), initial),
                dtype=variable.dtype,
                trainable=True,
                name="inner_rate",
            )
            for variable in variables
        ]


def save_rates(rates, path):
    """Writes a `{key: array}` dict to an `.npz` file (keys may contain "/")."""
    keys = sorted(rates)
    arrays = {f"rate_{i}": rates[key] for i, key in enumerate(keys)}
    # `np.savez` would turn "/" in names into folders of the archive, so the
    # keys travel as an array of their own.
    runs.save_arrays(path, {"keys": np.array(keys, dtype=str), **arrays})


def load_rates(path):
    """Reads a dict written by `save_rates`."""
    with np.load(path, allow_pickle=False) as data:
        return {str(key): data[f"rate_{i}"] for i, key in enumerate(data["keys"])}
