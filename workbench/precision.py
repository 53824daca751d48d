"""The numeric precision of a run: a recipe's `precision`, as a Keras dtype policy held for its training only.

`float32` computes and stores everything in float32. `mixed_bfloat16` and
`mixed_float16` keep every variable in float32 (so optimizer updates, the meta
learner's fast weights and its meta-gradients stay float32) and compute layers
in the lower precision, casting each variable as a layer reads it (Keras'
autocast, which also applies to the fast weights a `stateless_call` is given).
Outputs stay in the variable dtype: models end with a layer made with
`output_dtype()`, so losses, metrics and saved models' predictions are float32.

Keras holds the dtype policy in global state that `keras.backend.clear_session()`
resets and every layer made meanwhile reads. `precision_policy` sets it for one
run and puts back the policy it found, so a run never depends on what ran before
it in the process. Layers record their policy in their config: a saved model
reloads with the precision it trained in, whatever the policy of the process
that loads it.

Loss scaling: float16's narrow exponent range underflows small gradients.
`Model.compile` wraps the optimizer in a `keras.optimizers.LossScaleOptimizer`
by itself when the model's policy is `mixed_float16`, which covers transfer
phases; the meta learner's custom loops do not scale losses, and meta recipes
refuse `mixed_float16` (bfloat16 has float32's exponent range and needs none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from workbench.errors import ArgumentError

__all__ = ["PRECISIONS", "float32_copy", "output_dtype", "precision_policy"]

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator:
    """Layers made inside compute in `precision` (one of `PRECISIONS`); the previous policy comes back afterwards.

    Yields the policy set. Keras is imported here, not with the module: the runner
    imports this module, and commands that only read recipes must not load TensorFlow.
    """
    import keras

    if precision not in PRECISIONS:
        raise ArgumentError(f"Expected `precision` to be one of {list(PRECISIONS)}. Received: precision={precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def output_dtype(dtype=None) -> str:
    """The dtype of a model's last layer: the variable dtype of policy `dtype`, or of the current policy when None.

    Under a mixed policy that is float32, so logits, probabilities and the
    losses computed from them keep float32's precision and range; under a plain
    policy (float32, or float64 in tests) it is the policy itself.
    """
    import keras

    policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
    return policy.variable_dtype


def float32_copy(model):
    """`model` itself when no layer computes below float32; else a copy computing in float32, with the same weights.

    For exports: ONNX Runtime and LiteRT have no bfloat16 kernels for most ops,
    and a deployed model should not depend on the CPU having bfloat16
    instructions. Variables are float32 under every mixed policy, so the copy
    holds the very weights the mixed model trained; its outputs differ only by
    the lower precision's rounding.
    """
    import keras

    from workbench.models.layers import all_layers

    if not any(layer.compute_dtype in ("bfloat16", "float16") for layer in all_layers(model)):
        return model

    def in_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
