"""The learned optimizer's network: a coordinatewise LSTM (Andrychowicz et al. 2016).

Every coordinate of the optimizee is one row of a batch: the network's weights
are shared by all coordinates, and each coordinate keeps its own LSTM state.
One call maps each coordinate's gradient (preprocessed, see
`workbench.learned.preprocessing`) and state to its update and new state:

    inputs:  gradient [n, 1], then (h, c) [n, units] per LSTM layer
    outputs: update [n, 1], then the new (h, c) per layer

The layers are standard Keras layers (LSTMCell, Dense, Rescaling) behind the
registered `GradientPreprocessing`, so the network saves as an ordinary `.keras`
file that loads in safe mode once `workbench.learned` is imported.
"""

from __future__ import annotations

import keras
from keras import ops

from workbench.errors import ArgumentError
from workbench.learned.preprocessing import DEFAULT_P, GradientPreprocessing

# The paper scales the LSTM's linear output by 0.1, so that the first updates of
# an untrained network are small.
OUTPUT_SCALE = 0.1
GRADIENT_INPUT = "gradient"


def build_optimizer_net(
    layers: int = 2,
    units: int = 20,
    preprocessing_p: float = DEFAULT_P,
    output_scale: float = OUTPUT_SCALE,
    dtype: str | None = None,
    seed: int | None = None,
) -> keras.Model:
    """A coordinatewise LSTM optimizer of `layers` LSTM layers of `units` units each."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ArgumentError(f"The optimizer net needs at least one LSTM layer. Received: layers={layers!r}")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ArgumentError(f"The optimizer net's LSTM layers need at least one unit. Received: units={units!r}")
    dtype = dtype or keras.config.floatx()
    gradient = keras.Input((1,), name=GRADIENT_INPUT, dtype=dtype)
    states = [keras.Input((units,), name=f"{kind}_{index}", dtype=dtype) for index in range(1, layers + 1) for kind in ("h", "c")]
    x = GradientPreprocessing(preprocessing_p, name="preprocessing", dtype=dtype)(gradient)
    outputs = []
    for index in range(layers):
        cell = keras.layers.LSTMCell(
            units,
            name=f"lstm_{index + 1}",
            dtype=dtype,
            kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed + index),
            recurrent_initializer=keras.initializers.Orthogonal(seed=None if seed is None else seed + 100 + index),
        )
        x, (h, c) = cell(x, [states[2 * index], states[2 * index + 1]])
        outputs += [h, c]
    update = keras.layers.Dense(1, name="output", dtype=dtype, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    update = keras.layers.Rescaling(output_scale, name="output_scale", dtype=dtype)(update)
    return keras.Model([gradient, *states], [update, *outputs], name="learned_optimizer")


def state_size(net: keras.Model) -> tuple[int, int]:
    """`(layers, units)` of a network that `build_optimizer_net` made (read from its inputs, so a reloaded one works too)."""
    states = net.inputs[1:]
    return len(states) // 2, int(states[0].shape[-1])


def initial_state(net: keras.Model, coordinates: int, dtype=None) -> list:
    """Zero LSTM states for `coordinates` coordinates: `[h_1, c_1, h_2, c_2, ...]`, each `[coordinates, units]`."""
    layers, units = state_size(net)
    dtype = dtype or net.inputs[0].dtype
    return [ops.zeros((coordinates, units), dtype=dtype) for _ in range(2 * layers)]


def propose_updates(net: keras.Model, gradients, state: list) -> tuple:
    """Updates for gradients of any shape (each element one coordinate), with the coordinates' new states.

    `state` holds one row per element of `gradients`, in row-major order.
    """
    shape = ops.shape(gradients)
    outputs = net([ops.reshape(gradients, (-1, 1)), *state])
    return ops.reshape(outputs[0], shape), list(outputs[1:])
