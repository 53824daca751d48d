import keras
import numpy as np
import pytest
import tensorflow as tf

from workbench.meta.batchnorm import ExactBatchNormalization, has_batchnorm, with_exact_batchnorm, with_standard_batchnorm
from workbench.models.builtin import build_conv4


def _norm_classes(model):
    classes = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            classes += _norm_classes(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            classes.append(type(layer))
    return classes


def _trained_conv(seed=0):
    keras.utils.set_random_seed(seed)
    model = build_conv4((16, 16, 1), classes=3, filters=4)
    # Move the moving statistics away from their initial values.
    x = np.random.default_rng(seed).normal(2.0, 3.0, size=(8, 16, 16, 1)).astype("float32")
    model(x, training=True)
    return model, x


def test_round_trip_keeps_weights_and_outputs():
    model, x = _trained_conv()
    exact = with_exact_batchnorm(model)
    assert _norm_classes(exact) == [ExactBatchNormalization] * 4
    assert _norm_classes(model) == [keras.layers.BatchNormalization] * 4
    standard = with_standard_batchnorm(exact)
    assert _norm_classes(standard) == [keras.layers.BatchNormalization] * 4
    assert [layer.name for layer in standard.layers] == [layer.name for layer in model.layers]
    for clone in (exact, standard):
        for a, b in zip(model.get_weights(), clone.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # Training-mode calls update the moving statistics, so they come last.
    for training in (False, True):
        expected = model(x, training=training).numpy()
        for clone in (exact, standard):
            np.testing.assert_allclose(clone(x, training=training).numpy(), expected, rtol=1e-5, atol=1e-6)
    # The clone is independent of the original.
    exact.get_layer("head").kernel.assign(np.zeros(exact.get_layer("head").kernel.shape))
    assert np.any(model.get_layer("head").kernel.numpy() != 0)


def test_nested_models_are_converted():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()], name="base")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    assert has_batchnorm(model)
    exact = with_exact_batchnorm(model)
    assert _norm_classes(exact) == [ExactBatchNormalization]
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(exact(x, training=True), model(x, training=True), rtol=1e-5, atol=1e-6)
    assert not has_batchnorm(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_saved_standard_model_reloads_in_safe_mode(tmp_path):
    model, x = _trained_conv(1)
    exported = with_standard_batchnorm(with_exact_batchnorm(model))
    path = tmp_path / "model.keras"
    exported.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert _norm_classes(reloaded) == [keras.layers.BatchNormalization] * 4
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), exported.predict(x, verbose=0))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_exact_moments_have_the_full_second_derivative():
    """d/dx of the gradient of sum(bn(x)**3) w.r.t. x, against finite differences."""
    rng = np.random.default_rng(0)
    x0 = tf.constant(rng.normal(size=(6, 3)))
    direction = tf.constant(rng.normal(size=(6, 3)))
    errors = {}
    for cls in (ExactBatchNormalization, keras.layers.BatchNormalization):
        layer = cls(dtype="float64")
        layer.build((6, 3))

        def first_gradient(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = tf.reduce_sum(layer(x, training=True) ** 3 * tf.range(1.0, 4.0, dtype=tf.float64))
            return tape.gradient(value, x)

        with tf.GradientTape() as outer:
            outer.watch(x0)
            inner_value = tf.reduce_sum(first_gradient(x0) * direction)
        analytic = outer.gradient(inner_value, x0)
        eps = 1e-6
        numeric = (
            tf.reduce_sum(first_gradient(x0 + eps * direction) * direction)
            - tf.reduce_sum(first_gradient(x0 - eps * direction) * direction)
        ) / (2 * eps)
        errors[cls] = abs(float(tf.reduce_sum(analytic * direction)) - float(numeric)) / abs(float(numeric))
    assert errors[ExactBatchNormalization] < 1e-6
    assert errors[keras.layers.BatchNormalization] > 1e-3  # what the Keras layer gets wrong


def test_rejects_what_cannot_be_cloned():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Custom()
    model(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="functional or sequential"):
        with_exact_batchnorm(model)
    with pytest.raises(ValueError, match="Received: model="):
        with_standard_batchnorm("not a model")
