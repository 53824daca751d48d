import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from workbench.data.domain_pairs import rgb_source, textured_target
from workbench.data.images import ImageFolder
from workbench.data.sources import folder_classes, glyph_classes
from workbench.domain.a_distance import proxy_a_distance
from workbench.domain.schedule import annealed_learning_rate, reversal_weight
from workbench.errors import ArgumentError
from workbench.models.gradient_reversal import GradientReversal
from workbench.recipe.paths import data_root

OMNIGLOT_SMALL1 = data_root() / "omniglot" / "images_background_small1.zip"


def _domain_models(weight):
    """The same base and domain head, once with a reversal layer between them and once without."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    base = keras.layers.Dense(5, activation="tanh", name="base")
    head = keras.layers.Dense(1, name="domain")
    reversal = GradientReversal(weight, name="reversal")
    features = base(inputs)
    return keras.Model(inputs, head(reversal(features))), keras.Model(inputs, head(features)), reversal


def _gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x), from_logits=True)
    return [gradient.numpy() for gradient in tape.gradient(loss, model.trainable_variables)]


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 6)).astype("float32"), rng.integers(0, 2, size=(8, 1)).astype("float32")


def test_reversal_flips_and_scales_the_gradient_below_it_but_not_the_domain_heads():
    reversed_model, plain_model, _ = _domain_models(weight=0.3)
    x, y = _batch()
    np.testing.assert_array_equal(reversed_model(x), plain_model(x))  # identity forward
    base_kernel, base_bias, head_kernel, head_bias = _gradients(reversed_model, x, y)
    plain = _gradients(plain_model, x, y)
    assert np.abs(plain[0]).max() > 1e-3  # the comparison below is not between zeros
    np.testing.assert_allclose(base_kernel, -0.3 * plain[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(base_bias, -0.3 * plain[1], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(head_kernel, plain[2])
    np.testing.assert_array_equal(head_bias, plain[3])


def test_assigning_the_weight_rescales_the_gradient_without_retracing():
    reversed_model, plain_model, reversal = _domain_models(weight=1.0)
    x, y = _batch()
    traces = []

    @tf.function
    def base_gradient(x, y):
        traces.append(1)
        with tf.GradientTape() as tape:
            loss = keras.losses.binary_crossentropy(y, reversed_model(x), from_logits=True)
        return tape.gradient(loss, reversed_model.get_layer("base").kernel)

    plain = _gradients(plain_model, x, y)[0]
    for weight in (1.0, 0.25, 0.0, 2.0):
        reversal.weight.assign(weight)
        np.testing.assert_allclose(base_gradient(x, y), -weight * plain, rtol=1e-5, atol=1e-8)
    assert len(traces) == 1
    assert reversal.trainable_weights == [] and reversal.non_trainable_weights == [reversal.weight]


def test_a_model_with_the_layer_reloads_in_a_fresh_process_with_identical_outputs(tmp_path):
    reversed_model, _, reversal = _domain_models(weight=1.0)
    reversal.weight.assign(0.625)  # a schedule's value mid-training travels with the weights
    x, _ = _batch()
    reversed_model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras\n"
        "import workbench.models.gradient_reversal\n"
        "model = keras.models.load_model(sys.argv[1], safe_mode=True)\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
        "print(float(model.get_layer('reversal').weight.numpy()), model.get_layer('reversal').get_config()['weight'])\n"
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    arguments = [tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "fresh.npy"]
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)], check=True, timeout=120, env=environment, capture_output=True, text=True
    )
    assert done.stdout.split() == ["0.625", "1.0"]
    np.testing.assert_array_equal(np.load(tmp_path / "fresh.npy"), reversed_model.predict(x, verbose=0))


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), "1", True, None])
def test_the_layer_refuses_a_weight_that_is_not_a_finite_number(weight):
    with pytest.raises(ArgumentError, match="finite number"):
        GradientReversal(weight)


def test_the_schedules_follow_ganin_et_al_2016():
    assert reversal_weight(0.0) == 0.0
    assert reversal_weight(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1) == pytest.approx(0.98661, abs=1e-5)
    assert reversal_weight(1.0) == pytest.approx(0.99991, abs=1e-5)
    assert reversal_weight(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    assert annealed_learning_rate(0.01, 0.0) == 0.01
    assert annealed_learning_rate(0.01, 0.5) == pytest.approx(0.01 / 6**0.75) == pytest.approx(0.0026085, abs=1e-7)
    assert annealed_learning_rate(0.01, 1.0) == pytest.approx(0.01 / 11**0.75) == pytest.approx(0.0016556, abs=1e-7)
    for progress in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ArgumentError, match="progress"):
            reversal_weight(progress)


def test_proxy_a_distance_is_near_zero_for_one_distribution_and_near_two_for_separated_ones():
    rng = np.random.default_rng(0)
    one, other = rng.normal(size=(800, 10)), rng.normal(size=(800, 10))
    assert proxy_a_distance(one, other, seed=0) < 0.3
    shifted = rng.normal(size=(800, 10)) + np.eye(10)[0] * 8.0
    assert proxy_a_distance(one, shifted, seed=0) > 1.8
    assert proxy_a_distance(one, shifted, seed=0) == proxy_a_distance(one, shifted, seed=0)  # deterministic
    # Half-overlapping domains land between the two ends.
    assert 0.5 < proxy_a_distance(one, rng.normal(size=(800, 10)) + np.eye(10)[0] * 1.5, seed=0) < 1.5


def test_proxy_a_distance_refuses_unusable_features():
    features = np.zeros((10, 3))
    with pytest.raises(ArgumentError, match="same size per example"):
        proxy_a_distance(features, np.zeros((10, 4)))
    with pytest.raises(ArgumentError, match="at least 4 target examples"):
        proxy_a_distance(features, np.zeros((3, 3)))
    with pytest.raises(ArgumentError, match="NaN or infinite"):
        proxy_a_distance(features, np.full((10, 3), np.nan))
    with pytest.raises(ArgumentError, match="real array"):
        proxy_a_distance(np.zeros(10), features)


def _channel_statistics(images):
    pixels = images.images.reshape(-1, 3).astype(np.float64)
    return pixels.mean(axis=0), pixels.std(axis=0), np.abs(pixels[:, 0] - pixels[:, 1]).mean()


def test_the_textured_target_keeps_classes_changes_colours_and_follows_the_seed():
    glyphs = glyph_classes([0, 1, 2], samples=4, image_size=(16, 16), channels=1, seed=0)
    source, target = rgb_source(glyphs), textured_target(glyphs, seed=1)
    for domain in (source, target):
        assert domain.images.shape == (12, 16, 16, 3) and domain.images.dtype == np.uint8
        np.testing.assert_array_equal(domain.labels, glyphs.labels)
        assert domain.names == glyphs.names and domain.groups == glyphs.groups
    np.testing.assert_array_equal(source.images, np.repeat(glyphs.images, 3, axis=-1))

    np.testing.assert_array_equal(textured_target(glyphs, seed=1).images, target.images)
    assert not np.array_equal(textured_target(glyphs, seed=2).images, target.images)

    source_mean, _, source_spread = _channel_statistics(source)
    target_mean, target_std, target_spread = _channel_statistics(target)
    assert source_spread == 0 and target_spread > 20  # gray against colour
    assert np.all(np.abs(source_mean - target_mean) > 50) and np.all(target_std > 30)


def test_the_textured_target_wants_grayscale_images():
    glyphs = glyph_classes([0, 1], samples=2, image_size=(8, 8), channels=3, seed=0)
    with pytest.raises(ArgumentError, match="channels=1"):
        textured_target(glyphs, seed=0)


@pytest.mark.skipif(not OMNIGLOT_SMALL1.exists(), reason=f"Omniglot not found at {OMNIGLOT_SMALL1}")
def test_omniglot_on_textures_is_far_from_plain_omniglot_by_proxy_a_distance():
    folder = ImageFolder.open(OMNIGLOT_SMALL1)
    characters = folder_classes(folder, folder.classes[:6], (28, 28), channels=1)
    source, target = rgb_source(characters), textured_target(characters, seed=0)
    assert proxy_a_distance(source.images, target.images, seed=0) > 1.5
