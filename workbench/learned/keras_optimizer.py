"""A learned optimizer as a Keras optimizer: `optimizer: {learned: RUN}` in a transfer recipe's phase.

Each trainable variable gets its LSTM state, one row per element (two layers
of 20 units keep 80 numbers per parameter, as in the paper), and each step
adds the network's proposed update, times `learning_rate` (1: as trained), to
the variable. The network is the `model.keras` of a learned-optimizer run,
loaded in safe mode; the optimizer's config names that file, so a model
compiled with this optimizer saves, and reloads with `compile=True` while the
file is still there.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
from keras import ops

from workbench.errors import ModelError
from workbench.learned.optimizer_net import GRADIENT_INPUT, propose_updates, state_size
from workbench.learned.preprocessing import SERIALIZATION_PACKAGE


def load_optimizer_net(path: str | Path) -> keras.Model:
    """The network of a learned optimizer: from a run directory or its `.keras` file, in safe mode."""
    from workbench import runs

    path = Path(path)
    file = path / runs.MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise ModelError(f"{file} does not exist; give the directory of a finished learned_optimizer run. Received: path={str(path)!r}")
    try:
        net = keras.saving.load_model(file, safe_mode=True, compile=False)
    except Exception as error:  # a corrupt or foreign file: say which and why, in one line
        raise ModelError(f"{file}: cannot be loaded as a learned optimizer ({type(error).__name__}: {error})") from None
    if not net.inputs or net.inputs[0].name != GRADIENT_INPUT:
        raise ModelError(
            f"{file} is not a learned optimizer (its first input is {net.inputs[0].name!r}, not {GRADIENT_INPUT!r}); "
            "give the run directory of an algorithm: learned_optimizer recipe"
        )
    return net


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class LearnedOptimizer(keras.optimizers.Optimizer):
    """Applies a trained coordinatewise LSTM optimizer (Andrychowicz et al. 2016) to a model's variables."""

    def __init__(self, path: str, learning_rate: float = 1.0, name: str = "learned_optimizer", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.path = str(Path(path).resolve())
        self.net = load_optimizer_net(self.path)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        layers, units = state_size(self.net)
        self._states = [
            [
                self.add_variable(
                    (math.prod(variable.shape), units), dtype=self.net.inputs[0].dtype, name=f"{variable.name}_{kind}_{layer}"
                )
                for layer in range(1, layers + 1)
                for kind in ("h", "c")
            ]
            for variable in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        states = self._states[self._get_variable_index(variable)]
        dtype = self.net.inputs[0].dtype
        updates, new_states = propose_updates(self.net, ops.cast(gradient, dtype), [state.value for state in states])
        for state, new in zip(states, new_states, strict=True):
            self.assign(state, new)
        self.assign_add(variable, ops.cast(updates * ops.cast(learning_rate, dtype), variable.dtype))

    def get_config(self):
        return {**super().get_config(), "path": self.path}
