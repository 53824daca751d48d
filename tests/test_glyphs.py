import numpy as np
import pytest

from workbench.data.glyphs import draw_glyphs
from workbench.errors import DataError


def test_shapes_dtypes_and_labels():
    images, labels = draw_glyphs(range(3), per_class=4, image_size=(20, 24))
    assert images.shape == (12, 20, 24, 1)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])


def test_white_strokes_on_black_with_smoothed_edges():
    images, _ = draw_glyphs(range(5), per_class=4, image_size=(28, 28))
    ink = images > 127
    assert images.max() == 255
    assert np.all(images[:, 0, 0] == 0)  # the corner is background
    assert 0.05 < ink.mean() < 0.4
    # Supersampling leaves grey pixels along the stroke edges.
    assert np.any((images > 0) & (images < 255))


def test_same_arguments_give_the_same_images():
    first, _ = draw_glyphs(range(4), per_class=3, seed=5)
    second, _ = draw_glyphs(range(4), per_class=3, seed=5)
    np.testing.assert_array_equal(first, second)


def test_a_class_is_the_same_glyph_whatever_classes_are_requested():
    many, _ = draw_glyphs(range(10), per_class=4, seed=1)
    few, labels = draw_glyphs([7, 3], per_class=4, seed=1)
    np.testing.assert_array_equal(few[:4], many[7 * 4 : 8 * 4])
    np.testing.assert_array_equal(few[4:], many[3 * 4 : 4 * 4])
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4)


def test_sample_i_does_not_depend_on_per_class():
    short, _ = draw_glyphs([2], per_class=3)
    long, _ = draw_glyphs([2], per_class=8)
    np.testing.assert_array_equal(short, long[:3])


def test_seed_changes_the_drawings_and_alphabet_changes_the_glyphs():
    base, _ = draw_glyphs(range(3), per_class=2)
    assert not np.array_equal(base, draw_glyphs(range(3), per_class=2, seed=1)[0])
    assert not np.array_equal(base, draw_glyphs(range(3), per_class=2, alphabet=1)[0])


def test_samples_of_a_class_are_nearer_each_other_than_other_classes():
    # Nearest class mean on blurred pixels must beat chance (10%) clearly: the
    # classes are learnable. (A small convnet reaches about 80% with 5 shots.)
    ways, shots = 10, 10
    train, _ = draw_glyphs(range(ways), per_class=shots, seed=0)
    test, labels = draw_glyphs(range(ways), per_class=10, seed=1)

    def features(images):
        x = images[..., 0].astype(np.float32)
        x = (x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:]) / 4
        x = x.reshape(len(x), -1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    means = features(train).reshape(ways, shots, -1).mean(axis=1)
    predicted = np.argmax(features(test) @ means.T, axis=1)
    assert np.mean(predicted == labels) > 0.3
    # Yet samples are not copies of each other.
    assert len({image.tobytes() for image in train}) == len(train)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": [], "per_class": 1},
        {"classes": [-1], "per_class": 1},
        {"classes": [1.5], "per_class": 1},
        {"classes": [0], "per_class": 0},
        {"classes": [0], "per_class": 1, "image_size": (28,)},
        {"classes": [0], "per_class": 1, "image_size": (0, 28)},
    ],
)
def test_bad_arguments_raise_data_error(kwargs):
    with pytest.raises(DataError, match="Received"):
        draw_glyphs(**kwargs)
