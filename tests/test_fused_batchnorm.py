import keras
import numpy as np
import pytest
import tensorflow as tf

from workbench.meta.learner import MetaLearner
from workbench.models.builtin import build_conv4
from workbench.models.fused_batchnorm import FusedBatchNormalization, fused_batchnorm

FUSED_OP = "FusedBatchNormV3"


def _op_types(concrete_function):
    """Every op type of a traced function, the functions it calls (loop bodies, gradients) included."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def _pair(shape, policy, seed=0):
    """A Keras BatchNormalization and a fused one with the same non-default weights."""
    rng = np.random.default_rng(seed)
    layers = [cls(momentum=0.9, epsilon=1.001e-5, dtype=policy) for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    channels = shape[-1]
    weights = [
        rng.normal(1.0, 0.3, channels),
        rng.normal(0.0, 0.3, channels),
        rng.normal(0.0, 0.3, channels),
        rng.uniform(0.5, 2.0, channels),
    ]
    for layer in layers:
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
    return layers


def _forward_and_gradients(layer, x, upstream, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [tf.cast(y, "float32").numpy(), *(g.numpy() for g in grads), layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_layer_matches_keras_batchnorm_in_training(policy, tolerance):
    shape = (6, 5, 5, 4)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    stock, fused = _pair(shape, policy)
    expected = _forward_and_gradients(stock, x, upstream, training=True)
    found = _forward_and_gradients(fused, x, upstream, training=True)
    names = ["outputs", "d/dx", "d/dgamma", "d/dbeta", "moving mean", "moving variance"]
    for name, a, b in zip(names, expected, found, strict=True):
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance, err_msg=name)
    assert FUSED_OP in _op_types(tf.function(lambda t: fused(t, training=True)).get_concrete_function(x))


@pytest.mark.parametrize(
    "shape, dtype, training, trainable",
    [
        ((6, 4), "float32", True, True),  # not an image
        ((6, 3, 3, 4), "float64", True, True),  # a dtype the kernel lacks
        ((6, 3, 3, 4), "float32", False, True),  # inference mode
        ((6, 3, 3, 4), "float32", True, False),  # frozen: inference mode too
    ],
    ids=["rank-2", "float64", "inference", "frozen"],
)
def test_calls_the_kernel_does_not_serve_are_keras_own(shape, dtype, training, trainable):
    stock, fused = _pair(shape, dtype)
    stock.trainable = fused.trainable = trainable
    x = tf.constant(np.random.default_rng(2).normal(size=shape), dtype)
    np.testing.assert_array_equal(fused(x, training=training).numpy(), stock(x, training=training).numpy())
    np.testing.assert_array_equal(fused.moving_variance.numpy(), stock.moving_variance.numpy())
    assert FUSED_OP not in _op_types(tf.function(lambda t: fused(t, training=training)).get_concrete_function(x))


def test_fused_batchnorm_switches_layers_only_while_inside(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_conv4((12, 12, 1), classes=3, filters=4, blocks=2)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    x = np.random.default_rng(0).uniform(size=(9, 12, 12, 1)).astype("float32")
    y = np.arange(9) % 3
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with fused_batchnorm(model):
        assert {type(layer) for layer in norms} == {FusedBatchNormalization}
        model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    assert {type(layer) for layer in norms} == {keras.layers.BatchNormalization}
    assert not np.allclose(norms[0].moving_mean.numpy(), 0.0)  # the fit trained through the switched layers
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True, custom_objects={})
    assert all(type(layer) is keras.layers.BatchNormalization for layer in reloaded.layers if "bn" in layer.name)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def _episodes(dtype, tasks=2, ways=3, shots=2, queries=4, seed=0):
    from workbench.data.episodes_types import Episodes

    rng = np.random.default_rng(seed)
    labels = lambda n: np.tile(np.repeat(np.arange(ways), n), (tasks, 1)).astype("int32")  # noqa: E731
    return Episodes(
        support_x=rng.normal(size=(tasks, ways * shots, 8, 8, 1)).astype(dtype),
        support_y=labels(shots),
        query_x=rng.normal(size=(tasks, ways * queries, 8, 8, 1)).astype(dtype),
        query_y=labels(queries),
    )


def test_second_order_meta_gradient_with_fused_query_matches_float64():
    """The float64 learner (no fused kernel: finite differences check it) against float32 with the fused query pass."""
    gradients, ops, weights = {}, {}, None
    for dtype in ("float64", "float32"):
        keras.utils.set_random_seed(0)
        model = build_conv4((8, 8, 1), classes=3, filters=4, blocks=2, dtype=dtype)
        weights = weights or model.get_weights()
        model.set_weights([w.astype(dtype) for w in weights])
        learner = MetaLearner(model, inner_steps=2, inner_learning_rate=0.3, loss="sparse_categorical_crossentropy")
        episodes = _episodes(dtype)
        gradients[dtype] = np.concatenate([g.ravel() for g in learner.meta_gradient(episodes)["gradients"]])
        step = learner._current_step()[0].get_concrete_function(*learner._tensors(episodes))
        ops[dtype] = _op_types(step)
    assert FUSED_OP in ops["float32"] and FUSED_OP not in ops["float64"]
    difference = np.linalg.norm(gradients["float32"] - gradients["float64"]) / np.linalg.norm(gradients["float64"])
    assert difference < 1e-4, difference
